#!/usr/bin/env python3
"""Checks of deploy/aws/ferry.yaml beyond cfn-lint; `cargo xtask lint-aws` runs them.

    check.py TEMPLATE DDL_FILE     DDL_FILE: what `ferry-cloud lake ddl` prints
    check.py --self-test TEMPLATE DDL_FILE
                                   each check refuses a template made to break it
    check.py --run-hook TEMPLATE SERIAL ALLOW_DIR [THING ...]
                                   the enrollment hook's answer for SERIAL, with the
                                   allow-list's objects (SERIAL.json) in ALLOW_DIR and the
                                   THINGs existing; the cloud's tests use it to check that
                                   what `ferry-cloud enroll` writes is what the hook reads

1. No Allow statement of any policy (IoT or IAM) grants an `iot:` action on Resource "*".
2. Every device-facing IoT policy statement names resources through the connection's
   thing name, so a device reaches only its own client id and topics.
3. The Glue tables of the raw layer have the columns, in order, that the DDL gives.
4. Enrollment: the provisioning template runs the stack's pre-provisioning hook by default;
   the ingest's and the claim's client ids are outside the device namespace twice over
   (the device policy denies them, and the hook refuses serials that would name a thing
   like them); and the hook's own code, run against fake S3 and IoT clients, allows only
   listed serials, once, and a listed one again only when marked for re-enrollment.
"""
import io
import re
import sys
import types

from cfnlint.decode import decode_str


def statements(template):
    """(resource name, statement) for every policy document in the template."""
    for name, resource in template.get("Resources", {}).items():
        props = resource.get("Properties", {})
        docs = []
        if "PolicyDocument" in props:
            docs.append(props["PolicyDocument"])
        for policy in props.get("Policies", []) or []:
            docs.append(policy.get("PolicyDocument", {}))
        for doc in docs:
            for st in doc.get("Statement", []):
                yield name, resource.get("Type"), st


def as_list(value):
    return value if isinstance(value, list) else [value]


def text(value):
    """A resource as text: !Sub strings are what they say; other intrinsics, their repr."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return value if isinstance(value, str) else repr(value)


def check_no_star(template):
    problems = []
    for name, _, st in statements(template):
        actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
        if st.get("Effect") != "Allow" or not any(a.lower().startswith("iot:") or a == "*" for a in actions):
            continue
        for resource in as_list(st.get("Resource", [])):
            if text(resource).strip() == "*":
                problems.append(f'{name}: {actions} on Resource "*"')
    return problems


def check_device_scoped(template):
    problems = []
    for name, kind, st in statements(template):
        if kind != "AWS::IoT::Policy" or name != "DevicePolicy" or st.get("Effect") != "Allow":
            continue
        for resource in as_list(st.get("Resource", [])):
            if "${!iot:Connection.Thing.ThingName}" not in text(resource):
                problems.append(f"{name}: {text(resource)} is not scoped to the thing name")
    return problems


def hook_code(template):
    hook = template.get("Resources", {}).get("EnrollmentHook", {})
    return hook.get("Properties", {}).get("Code", {}).get("ZipFile", "")


def check_hook_on(template):
    props = template.get("Resources", {}).get("ProvisioningTemplate", {}).get("Properties", {})
    hook = props.get("PreProvisioningHook")
    if not isinstance(hook, dict) or "EnrollmentHook" not in repr(hook.get("TargetArn")):
        return ["ProvisioningTemplate: the stack's EnrollmentHook is not its default pre-provisioning hook"]
    if not hook_code(template):
        return ["EnrollmentHook has no inline code"]
    return []


def client_patterns(template, policy, effect):
    """The client ids (after `client/`) a policy's statements of `effect` name for iot:Connect."""
    out = []
    for name, _, st in statements(template):
        if name == policy and st.get("Effect") == effect and "iot:Connect" in as_list(st.get("Action", [])):
            out += [text(r).split(":client/", 1)[1] for r in as_list(st.get("Resource", []))
                    if ":client/" in text(r)]
    return out


def check_namespaces(template):
    problems = []
    body = text(template["Resources"]["ProvisioningTemplate"]["Properties"].get("TemplateBody", ""))
    if '["ferry-", {"Ref": "SerialNumber"}]' not in body:
        return ["the provisioning template no longer names things ferry-SERIAL; update this check"]
    found = re.search(r"RESERVED = \(([^)]*)\)", hook_code(template))
    reserved = tuple(re.findall(r'"([^"]+)"', found.group(1))) if found else ()
    denied = set(client_patterns(template, "DevicePolicy", "Deny"))
    for policy in ("IngestPolicy", "ClaimPolicy"):
        for pattern in client_patterns(template, policy, "Allow"):
            if pattern not in denied:
                problems.append(f"DevicePolicy does not deny iot:Connect as {pattern} ({policy}'s)")
            rest = pattern[len("ferry-"):] if pattern.startswith("ferry-") else None
            if rest is not None and not rest.lower().startswith(reserved):
                problems.append(f"the hook's RESERVED {reserved} lets a serial name a thing {pattern}")
    return problems


class _NoSuchKey(Exception):
    pass


class _NotFound(Exception):
    pass


class _ClientError(Exception):
    pass


class FakeS3:
    """get_object/put_object with ETags and If-Match, as S3 answers them."""

    def __init__(self, objects, race=False):
        self.objects = {k: (v, 1) for k, v in objects.items()}
        self.race = race
        self.exceptions = types.SimpleNamespace(NoSuchKey=_NoSuchKey, ClientError=_ClientError)

    def get_object(self, Bucket, Key):
        if Key not in self.objects:
            raise _NoSuchKey(Key)
        body, etag = self.objects[Key]
        if self.race:  # another enrollment writes between this read and the write
            self.objects[Key] = (body, etag + 1)
        return {"Body": io.BytesIO(body), "ETag": etag}

    def put_object(self, Bucket, Key, Body, IfMatch=None):
        if IfMatch is not None and self.objects.get(Key, (None, None))[1] != IfMatch:
            raise _ClientError("PreconditionFailed")
        self.objects[Key] = (Body, self.objects.get(Key, (None, 0))[1] + 1)


class FakeIot:
    def __init__(self, things):
        self.things = set(things)
        self.exceptions = types.SimpleNamespace(ResourceNotFoundException=_NotFound)

    def describe_thing(self, thingName):
        if thingName not in self.things:
            raise _NotFound(thingName)
        return {"thingName": thingName}


def run_hook(code, serial, listed, things=(), race=False):
    """The hook's answer for `serial`, with `listed` {serial: entry} and existing `things`,
    and the allow-list afterwards."""
    import json
    import os
    s3 = FakeS3({f"allow/{k}.json": json.dumps(v).encode() for k, v in listed.items()}, race)
    iot = FakeIot(things)
    fake = types.ModuleType("boto3")
    fake.client = lambda name: {"s3": s3, "iot": iot}[name]
    saved = sys.modules.get("boto3")
    sys.modules["boto3"] = fake
    os.environ.update(BUCKET="enrollment", PREFIX="allow/")
    try:
        module = {}
        exec(compile(code, "EnrollmentHook", "exec"), module)
        answer = module["handler"]({"parameters": {"SerialNumber": serial, "Store": "S-99"}}, None)
    finally:
        if saved is None:
            del sys.modules["boto3"]
        else:
            sys.modules["boto3"] = saved
    after = {k[len("allow/"):-len(".json")]: json.loads(v) for k, (v, _) in s3.objects.items()}
    return answer, after


def check_hook_logic(template):
    code = hook_code(template)
    if not code:
        return ["EnrollmentHook has no inline code"]
    import contextlib
    listed = {"ws-001": {"store": "S-01"}, "ws-002": {"store": "S-02", "reenroll": True},
              "ingest-1": {}, "Ferry-x": {}, "pos-9": {}}
    cases = [
        # (serial, things that exist, race, allowed?, Store override)
        ("ws-001", [], False, True, "S-01"),
        ("ws-001", ["ferry-ws-001"], False, False, None),
        ("ws-002", ["ferry-ws-002"], False, True, "S-02"),
        ("ws-404", [], False, False, None),
        ("ingest-1", [], False, False, None),
        ("Ferry-x", [], False, False, None),
        ("pos-9", [], True, False, None),
        ("../ws-001", [], False, False, None),
        ("ws 001", [], False, False, None),
        ("", [], False, False, None),
        (None, [], False, False, None),
        ("w" * 65, [], False, False, None),
    ]
    problems = []
    for serial, things, race, allowed, store in cases:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                answer, after = run_hook(code, serial, listed, things, race)
            except Exception as e:  # the hook must answer, never fail
                problems.append(f"hook, serial {serial!r}: raised {e!r}")
                continue
        if answer.get("allowProvisioning") is not allowed:
            problems.append(f"hook, serial {serial!r} (things {things}, race {race}): {answer}")
        elif allowed and answer.get("parameterOverrides", {}).get("Store") != store:
            problems.append(f"hook, serial {serial!r}: the listed store {store} is not imposed: {answer}")
        elif allowed and (after[serial].get("reenroll") or "enrolled_at" not in after[serial]):
            problems.append(f"hook, serial {serial!r}: the mark is not cleared, or no enrolled_at: {after[serial]}")
    return problems


def ddl_columns(ddl):
    """{table: [(name, type)]} of the raw layer's CREATE TABLE statements."""
    tables = {}
    for m in re.finditer(r"CREATE EXTERNAL TABLE IF NOT EXISTS (ferry_raw_\w+) \((.*?)\)\s*PARTITIONED", ddl, re.S):
        cols = []
        for part in re.split(r",\s*(?![^<]*>)", m.group(2)):
            col, typ = part.strip().split(None, 1)
            cols.append((col, typ.replace(" ", "")))
        tables[m.group(1)] = cols
    return tables


def check_tables(template, ddl):
    problems = []
    expected = ddl_columns(ddl)
    if not expected:
        return ["the DDL has no raw tables"]
    found = {}
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Glue::Table":
            continue
        table = resource["Properties"]["TableInput"]
        cols = table.get("StorageDescriptor", {}).get("Columns")
        if cols is not None:
            found[table["Name"]] = [(c["Name"], c["Type"].replace(" ", "")) for c in cols]
    for table, cols in expected.items():
        if table not in found:
            problems.append(f"no Glue table {table}")
        elif found[table] != cols:
            problems.append(f"{table}: the template has {found[table]}, the DDL {cols}")
    return problems


def load(path_or_text, is_text=False):
    source = path_or_text if is_text else open(path_or_text).read()
    template, matches = decode_str(source)
    if matches:
        raise SystemExit(f"cannot parse the template: {matches}")
    return template


def run(template, ddl):
    return (check_no_star(template) + check_device_scoped(template) + check_tables(template, ddl)
            + check_hook_on(template) + check_namespaces(template) + check_hook_logic(template))


def self_test(template_path, ddl):
    """Each check must refuse a template broken for it."""
    good = open(template_path).read()
    broken = {
        "no_star": good.replace(
            "Action: iot:DescribeEndpoint\n                Resource: !Sub \"arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:*\"",
            'Action: iot:DescribeEndpoint\n                Resource: "*"'),
        "device_scoped": good.replace(
            "topicfilter/ferry/v1/${!iot:Connection.Thing.ThingName}/cards", "topicfilter/ferry/v1/+/cards"),
        "tables": good.replace("{Name: ts_suspect, Type: boolean}\n            - {Name: sensor", "{Name: sensor"),
        "hook_on": good.replace(
            "TargetArn: !If [HasHook, !Ref PreProvisioningHookArn, !GetAtt EnrollmentHook.Arn]",
            "TargetArn: !Ref PreProvisioningHookArn"),
        "namespaces_deny": good.replace(
            "              - !Sub \"arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:client/ferry-ingest-*\"\n"
            "              - !Sub \"arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:client/ferry-enroll-*\"",
            "              - !Sub \"arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:client/ferry-enroll-*\"", 1),
        "namespaces_reserved": good.replace('RESERVED = ("ingest", "enroll", "ferry")', 'RESERVED = ("enroll", "ferry")'),
        "hook_allow_list": good.replace(
            'return refuse("serial %s is not on the allow-list" % serial)', 'return {"allowProvisioning": True}'),
        "hook_existing_thing": good.replace(
            'if exists and entry.get("reenroll") is not True:', "if False:"),
        "hook_once": good.replace('entry["reenroll"] = False', "pass"),
        "hook_race": good.replace("IfMatch=got[\"ETag\"],", ""),
        "hook_store": good.replace('answer["parameterOverrides"] = {"Store": entry["store"]}', "pass"),
    }
    for check, text_ in broken.items():
        if text_ == good:
            raise SystemExit(f"self-test {check}: the template no longer has what the test breaks")
        if not run(load(text_, is_text=True), ddl):
            raise SystemExit(f"self-test {check}: a broken template passed")
    print(f"check.py self-test: each of {len(broken)} broken templates refused")


def run_hook_on_folder(template_path, serial, folder, things):
    import json
    import os
    listed = {}
    for name in os.listdir(folder):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                listed[name[:-len(".json")]] = json.load(f)
    code = hook_code(load(template_path))
    import contextlib
    with contextlib.redirect_stdout(io.StringIO()):
        answer, _ = run_hook(code, serial, listed, things)
    print(json.dumps(answer))


def main():
    args = sys.argv[1:]
    if args and args[0] == "--self-test":
        self_test(args[1], open(args[2]).read())
        return
    if args and args[0] == "--run-hook":
        run_hook_on_folder(args[1], args[2], args[3], args[4:])
        return
    template_path, ddl_path = args
    problems = run(load(template_path), open(ddl_path).read())
    for p in problems:
        print(f"{template_path}: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{template_path}: no IoT action on Resource \"*\", device policy scoped to its thing, "
          f"Glue raw tables match the DDL, the enrollment hook on and correct, namespaces disjoint")


if __name__ == "__main__":
    main()
