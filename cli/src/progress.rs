//! Progress bars on a terminal (indicatif), nothing otherwise.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_repo::{NoProgress, Progress, Stage, Unit};

#[derive(Debug)]
struct Bars(MultiProgress);

struct Bar {
    bar: ProgressBar,
    unit: Unit,
}

impl Stage for Bar {
    fn set_total(&self, total: u64) {
        self.bar.set_length(total);
        let template = match self.unit {
            Unit::Bytes => {
                "{prefix:20} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            }
            Unit::Items | Unit::None => "{prefix:20} [{elapsed_precise}] {wide_bar} {pos}/{len}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style);
        }
    }
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bars {
    fn stage(&self, title: &str, unit: Unit) -> Box<dyn Stage> {
        let template = match unit {
            Unit::Bytes => "{prefix:20} [{elapsed_precise}] {bytes} {bytes_per_sec}",
            Unit::Items => "{prefix:20} [{elapsed_precise}] {pos}",
            Unit::None => "{prefix:20} [{elapsed_precise}] {spinner}",
        };
        let bar = self.0.add(ProgressBar::no_length());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(title.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Box::new(Bar { bar, unit })
    }
}

/// Bars when stderr is a terminal and output is not JSON; silence otherwise.
pub(crate) fn for_terminal(json: bool) -> Arc<dyn Progress> {
    if !json && std::io::stderr().is_terminal() {
        Arc::new(Bars(MultiProgress::with_draw_target(
            ProgressDrawTarget::stderr(),
        )))
    } else {
        Arc::new(NoProgress)
    }
}

/// What a poll of `wait_until_finished` found.
pub(crate) enum Waited {
    /// Still running; the text for the spinner line on a terminal.
    Running(String),
    /// Finished in this phase.
    Finished(String),
}

/// Polls once a second until `poll` says the object (`kind`: `backup`, `restore`) is finished,
/// showing a spinner with `poll`'s text on a terminal and a dot per second otherwise (Velero's
/// output). Returns the final phase; an error of `poll` ends the wait.
pub(crate) async fn wait_until_finished<F, Fut>(kind: &str, mut poll: F) -> anyhow::Result<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Waited>>,
{
    use std::io::Write as _;
    println!(
        "Waiting for {kind} to complete. You may safely press ctrl-c to stop waiting - your {kind} will continue in the background."
    );
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let phase = match poll().await {
            Ok(Waited::Running(message)) => {
                match &bar {
                    Some(bar) => bar.set_message(message),
                    None => {
                        print!(".");
                        let _ = std::io::stdout().flush();
                    }
                }
                continue;
            }
            Ok(Waited::Finished(phase)) => Ok(phase),
            Err(e) => Err(e),
        };
        match &bar {
            Some(bar) => bar.finish_and_clear(),
            // The dots' line ends before the result (an error goes to stderr after them).
            None if phase.is_ok() => println!(),
            None => {}
        }
        return phase;
    }
}
