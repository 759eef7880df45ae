//! `spawn`: a granted program kept running while the plugin makes other calls, spoken to line by
//! line. What makes a consistent PostgreSQL capture possible: a psql session exports its
//! transaction snapshot, pg_dump reads exactly that snapshot, and the same session then counts
//! rows at the same instant.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::bindings::wit_host::CommandOutput;
use crate::caps::programs::{exit_output, watchdog};

const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest line `read-line` returns: bulk data belongs in items, not in the sandbox.
const MAX_LINE: u64 = 16 << 20;
const MAX_QUEUED_LINES: usize = 4096;

/// A running program; killed when dropped before `finish`.
pub struct Process {
    program: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<std::io::Result<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// Kills the program at the deadline even while the plugin is busy elsewhere.
    dog: Sender<()>,
    deadline: Instant,
    finished: bool,
}

type R<T> = Result<T, String>;

impl Process {
    /// Starts `c` (already checked against the grants) with piped stdin, stdout and stderr.
    pub fn spawn(mut c: std::process::Command, program: &str, timeout: Duration) -> R<Process> {
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        // Bounded: a program whose output nobody reads waits on its pipe instead of growing
        // the host's memory.
        let (tx, lines) = crossbeam_channel::bounded(MAX_QUEUED_LINES);
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = vec![];
                match (&mut r).take(MAX_LINE + 1).read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(n) if n as u64 > MAX_LINE => {
                        let _ = tx.send(Err(std::io::Error::other(format!(
                            "a line of over {} MiB",
                            MAX_LINE >> 20
                        ))));
                        break;
                    }
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        if tx.send(Ok(line)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let mut err = child.stderr.take().expect("piped");
        let stderr = std::thread::spawn(move || {
            let mut v = vec![];
            let _ = std::io::Read::read_to_end(&mut err, &mut v);
            v
        });
        Ok(Process {
            program: program.to_string(),
            dog: watchdog(child.id(), timeout),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
            deadline: Instant::now() + timeout,
            finished: false,
        })
    }

    fn check_deadline(&mut self) -> R<()> {
        if Instant::now() >= self.deadline {
            self.kill();
            return Err(format!(
                "{} ran past its timeout and was killed",
                self.program
            ));
        }
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> R<()> {
        self.check_deadline()?;
        let program = &self.program;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{program}: its input is closed"))?;
        stdin
            .write_all(data)
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("writing to {program}: {e} (has it exited?)"))
    }

    pub fn read_line(&mut self, timeout_ms: u32) -> R<Option<String>> {
        self.check_deadline()?;
        let wait = if timeout_ms == 0 {
            DEFAULT_READ_TIMEOUT
        } else {
            Duration::from_millis(timeout_ms as u64)
        };
        let wait = wait.min(self.deadline.saturating_duration_since(Instant::now()));
        match self.lines.recv_timeout(wait) {
            Ok(Ok(line)) => Ok(Some(String::from_utf8_lossy(&line).into_owned())),
            Ok(Err(e)) => Err(format!("reading from {}: {e}", self.program)),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "{} printed no line within {} ms",
                self.program,
                wait.as_millis()
            )),
        }
    }

    pub fn finish(&mut self) -> R<CommandOutput> {
        if self.finished {
            return Err(format!("{} has already finished", self.program));
        }
        drop(self.stdin.take());
        let mut rest: Vec<u8> = vec![];
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // Drained to the end so the program can exit; at most 16 MiB kept.
                Ok(Ok(line)) if (rest.len() as u64) < MAX_LINE => {
                    rest.extend_from_slice(&line);
                    rest.push(b'\n');
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    return Err(format!(
                        "{} did not exit before its timeout and was killed",
                        self.program
                    ));
                }
            }
        }
        let status = self.child.wait().map_err(|e| e.to_string())?;
        self.finished = true;
        let _ = self.dog.send(());
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        exit_output(&self.program, status, rest, stderr)
    }

    fn kill(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = self.dog.send(());
            self.finished = true;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> std::process::Command {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", line]);
        c
    }

    #[test]
    fn talks_line_by_line_then_finishes_with_the_rest() {
        let mut p = Process::spawn(
            cmd("while read l; do echo \"got $l\"; done; echo bye; echo oops >&2; exit 3"),
            "sh",
            Duration::from_secs(30),
        )
        .unwrap();
        p.write(b"one\n").unwrap();
        assert_eq!(p.read_line(5000).unwrap().as_deref(), Some("got one"));
        p.write(b"two\n").unwrap();
        assert_eq!(p.read_line(5000).unwrap().as_deref(), Some("got two"));
        let out = p.finish().unwrap();
        assert_eq!(
            (out.status, out.stdout, out.stderr),
            (3, b"bye\n".to_vec(), b"oops\n".to_vec())
        );
        assert!(p.finish().is_err(), "finishes once");
    }

    #[test]
    fn silence_and_overstaying_are_errors_not_hangs() {
        let mut p = Process::spawn(cmd("sleep 30"), "sleep", Duration::from_millis(700)).unwrap();
        let e = p.read_line(100).unwrap_err();
        assert!(e.contains("no line within"), "{e}");
        let t = Instant::now();
        let e = p.finish().unwrap_err();
        assert!(
            e.contains("timeout") && t.elapsed() < Duration::from_secs(5),
            "{e}"
        );
        // The timeout bounds its life even while nobody talks to it.
        let mut idle =
            Process::spawn(cmd("sleep 30"), "sleep", Duration::from_millis(300)).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            idle.child.try_wait().unwrap().is_some(),
            "killed at its deadline"
        );
        // A program that ended answers None, not an error.
        let mut q = Process::spawn(cmd("true"), "true", Duration::from_secs(30)).unwrap();
        assert_eq!(q.read_line(5000).unwrap(), None);
    }
}
