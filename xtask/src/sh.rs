//! Running commands: echoed, failing with the command line, and timed for CI's summary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to the end; a non-zero exit is an error naming the command.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let line = describe(cmd);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start `{line}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

/// What `cargo test` said it ran, summed over its test binaries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestCount {
    pub passed: u64,
    pub failed: u64,
}

impl TestCount {
    /// Adds what a `test result: ok. 12 passed; 0 failed; ...` line says.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
    }
}

/// Runs `cmd` (a `cargo test`), passing its output through and counting its results.
pub fn run_counting(cmd: &mut Command) -> (Result<(), String>, TestCount) {
    let line = describe(cmd);
    let mut count = TestCount::default();
    let mut child = match cmd.stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => return (Err(format!("cannot start `{line}`: {e}")), count),
    };
    if let Some(out) = child.stdout.take() {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{l}");
            count.add_line(&l);
        }
    }
    let result = match child.wait() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{line}` failed ({s})")),
        Err(e) => Err(format!("`{line}`: {e}")),
    };
    (result, count)
}

/// Named steps and how long each took.
#[derive(Default)]
pub struct Timings {
    steps: Vec<(String, u64)>,
    started: Option<Instant>,
}

impl Timings {
    pub fn new() -> Self {
        Self {
            steps: Vec::new(),
            started: Some(Instant::now()),
        }
    }

    pub fn step<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        println!("::: {name}");
        let t0 = Instant::now();
        let out = f();
        self.steps.push((name.to_owned(), t0.elapsed().as_secs()));
        out
    }

    pub fn print(&self) {
        println!("\nsummary");
        for (name, secs) in &self.steps {
            println!("  {name:<30} {secs:>5}s");
        }
        if let Some(t0) = self.started {
            println!("  {:<30} {:>5}s", "total", t0.elapsed().as_secs());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TestCount;

    #[test]
    fn counts_cargo_test_result_lines() {
        let mut c = TestCount::default();
        c.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("running 5 tests");
        assert_eq!(
            c,
            TestCount {
                passed: 15,
                failed: 2
            }
        );
    }
}
