#!/usr/bin/env python3
"""Checks of deploy/aws/ferry.yaml beyond cfn-lint; `cargo xtask lint-aws` runs them.

    check.py TEMPLATE DDL_FILE     DDL_FILE: what `ferry-cloud lake ddl` prints
    check.py --self-test           each check refuses a template made to break it

1. No Allow statement of any policy (IoT or IAM) grants an `iot:` action on Resource "*".
2. Every device-facing IoT policy statement names resources through the connection's
   thing name, so a device reaches only its own client id and topics.
3. The Glue tables of the raw layer have the columns, in order, that the DDL gives.
"""
import re
import sys

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
        if kind != "AWS::IoT::Policy" or name != "DevicePolicy":
            continue
        for resource in as_list(st.get("Resource", [])):
            if "${!iot:Connection.Thing.ThingName}" not in text(resource):
                problems.append(f"{name}: {text(resource)} is not scoped to the thing name")
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
    return check_no_star(template) + check_device_scoped(template) + check_tables(template, ddl)


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
    }
    for check, text_ in broken.items():
        if text_ == good:
            raise SystemExit(f"self-test {check}: the template no longer has what the test breaks")
        if not run(load(text_, is_text=True), ddl):
            raise SystemExit(f"self-test {check}: a broken template passed")
    print(f"check.py self-test: each of {len(broken)} broken templates refused")


def main():
    args = sys.argv[1:]
    if args and args[0] == "--self-test":
        self_test(args[1], open(args[2]).read())
        return
    template_path, ddl_path = args
    problems = run(load(template_path), open(ddl_path).read())
    for p in problems:
        print(f"{template_path}: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{template_path}: no IoT action on Resource \"*\", device policy scoped to its thing, "
          f"Glue raw tables match the DDL")


if __name__ == "__main__":
    main()
