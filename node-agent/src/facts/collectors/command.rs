//! `command`: custom facts from commands' standard output (FactsPolicy
//! `spec.facts[].command`), run without a shell, killed after their `timeout`. Results are
//! cached for the policy's interval so a scrape does not run every command again.

use std::io::Read as _;
use std::process::{Command as Process, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use driftless_crds::facts_policy::{CustomFactSource, FactFormat};

use super::{CollectError, Collector, Settings};
use crate::metrics::Family;

struct Fact {
    name: String,
    format: FactFormat,
    argv: Vec<String>,
    timeout: Duration,
}

/// The collector.
pub struct Command {
    facts: Vec<Fact>,
    interval: Duration,
    cache: Mutex<super::CachedRun>,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let facts = settings
        .facts
        .iter()
        .filter_map(|f| match &f.source {
            CustomFactSource::Command(c) => Some(Fact {
                name: f.name.clone(),
                format: f.format,
                argv: c.argv.clone(),
                timeout: c.timeout.get(),
            }),
            _ => None,
        })
        .collect();
    Ok(Box::new(Command {
        facts,
        interval: settings.interval,
        cache: Mutex::new(None),
    }))
}

/// Runs a command, returning its standard output, or why not.
pub fn run(argv: &[String], timeout: Duration) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("empty argv")?;
    let mut child = Process::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let text = reader.join().unwrap_or_default();
                return if status.success() {
                    Ok(text)
                } else {
                    Err(format!("{program} exited with {status}"))
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} ran longer than {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    }
}

impl Collector for Command {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        if self.facts.is_empty() {
            return Ok(());
        }
        super::cached_update(&self.cache, self.interval, out, || {
            let (mut numbers, mut texts) = super::file::families();
            let mut failed = Vec::new();
            for fact in &self.facts {
                match run(&fact.argv, fact.timeout) {
                    Ok(text) => {
                        super::file::push(&fact.name, fact.format, &text, &mut numbers, &mut texts)
                    }
                    Err(why) => failed.push(format!("{}: {why}", fact.name)),
                }
            }
            Ok((vec![numbers, texts], failed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_and_time_out() {
        assert_eq!(
            run(&["echo".into(), "7".into()], Duration::from_secs(5)).unwrap(),
            "7\n"
        );
        let slow = run(&["sleep".into(), "5".into()], Duration::from_millis(100));
        assert!(slow.unwrap_err().contains("longer than"));
        assert!(run(&["false".into()], Duration::from_secs(5)).is_err());
    }
}
