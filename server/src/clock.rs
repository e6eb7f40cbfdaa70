//! The server's notion of now: the system clock, or a manual one that tests move by hand so
//! schedules and expiry can be exercised without waiting hours.
//!
//! Controllers read [`Clock::now`] for every decision that depends on the date, sleep with
//! [`Clock::sleep`], and are woken by [`Clock::changes`] when a manual clock moves (the system
//! clock never sends: its controllers requeue on their own timers).

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::stream::{self, StreamExt};
use jiff::Timestamp;
use tokio::sync::watch;

/// A clock. Cheap to clone; clones of a manual clock share its time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<watch::Sender<Timestamp>>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock standing at `start` until [`Clock::set`] or [`Clock::advance`] move it.
    pub fn manual(start: Timestamp) -> Clock {
        Clock {
            manual: Some(Arc::new(watch::Sender::new(start))),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// The current time, to the microsecond (what Kubernetes timestamps can hold is coarser).
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            Some(time) => *time.borrow(),
            None => Timestamp::now(),
        }
    }

    /// Moves a manual clock to `time` and wakes whoever waits on it. No effect on the system
    /// clock.
    pub fn set(&self, time: Timestamp) {
        if let Some(clock) = &self.manual {
            clock.send_replace(time);
        }
    }

    /// Moves a manual clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        if let Some(clock) = &self.manual {
            clock.send_modify(|now| {
                *now = now
                    .checked_add(jiff::SignedDuration::try_from(by).unwrap_or_default())
                    .unwrap_or(*now);
            });
        }
    }

    /// Waits until `by` has passed on this clock, counted from this call (not from the first
    /// poll), as `tokio::time::sleep` does.
    pub fn sleep(&self, by: Duration) -> impl Future<Output = ()> + Send + 'static {
        let manual = self.manual.as_ref().map(|clock| {
            let until = self
                .now()
                .checked_add(jiff::SignedDuration::try_from(by).unwrap_or_default())
                .unwrap_or(Timestamp::MAX);
            (clock.subscribe(), until)
        });
        async move {
            match manual {
                None => tokio::time::sleep(by).await,
                // The sender lives as long as any clone of the clock; once all are gone nobody
                // can move the time any more, and the sleep ends.
                Some((mut changes, until)) => {
                    let _ = changes.wait_for(|now| *now >= until).await;
                }
            }
        }
    }

    /// A stream that yields each time a manual clock moves; the system clock's never yields.
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        match &self.manual {
            None => stream::pending().boxed(),
            Some(clock) => {
                let mut rx = clock.subscribe();
                rx.mark_unchanged();
                stream::unfold(rx, |mut rx| async move {
                    rx.changed().await.ok()?;
                    Some(((), rx))
                })
                .boxed()
            }
        }
    }
}

/// `time` as a Kubernetes timestamp, truncated to whole seconds as the API server stores them.
pub fn kube_time(time: Timestamp) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(time.as_second()).unwrap_or(time),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_told_and_wakes_sleepers() {
        let start: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let clock = Clock::manual(start);
        assert_eq!(clock.now(), start);
        let mut changes = Box::pin(clock.changes());
        // The hour counts from the call, not from the task's first poll.
        let sleeper = tokio::spawn(clock.sleep(Duration::from_secs(3600)));
        clock.advance(Duration::from_secs(1800));
        assert_eq!(changes.next().await, Some(()));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1800));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), "2026-11-22T11:00:00Z".parse().unwrap());
    }

    #[test]
    fn kubernetes_times_are_whole_seconds() {
        let t: Timestamp = "2026-11-22T10:00:00.750Z".parse().unwrap();
        assert_eq!(kube_time(t).0.to_string(), "2026-11-22T10:00:00Z");
    }
}
