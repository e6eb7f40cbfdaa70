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
