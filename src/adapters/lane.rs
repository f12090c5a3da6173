//! The delivery lane every front end shares: one lane per chat, through which every call to that
//! chat goes, one at a time and in order.
//!
//! Calls are paced by token buckets ([`governor`]'s GCRA), not by a fixed gap: a chat may get a
//! short burst at once (a reply right after its "typing"), while the sustained rate stays under
//! the platform's limits per chat, per group and for the whole bot. A platform's own answer wins
//! over the buckets: a 429's window (or an emptied route bucket) holds the lane shut, capped at
//! [`MAX_HOLD`]. Network failures are retried with backoff. Lanes idle for a while are retired,
//! so the map does not grow with every chat ever seen.

use std::collections::{HashMap, VecDeque};
use std::future::IntoFuture;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::Locked;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// The buckets keep tokio's time (which tests may pause), as the lane's sleeps do.
#[derive(Debug, Clone, Copy)]
struct TokioClock(Instant);

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().duration_since(self.0)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// No platform's "wait" holds a lane longer than this (a bad header must not shut it for good).
pub const MAX_HOLD: Duration = Duration::from_secs(600);
/// Retries after a rate limit, and after a network failure, before a call fails.
const RATE_LIMIT_RETRIES: u32 = 5;
const NETWORK_RETRIES: u32 = 3;
/// A lane unused this long may be retired (its buckets are full again by then).
const RETIRE_AFTER: Duration = Duration::from_secs(600);
/// Retired lanes are looked for only once the map holds this many.
const RETIRE_ABOVE: usize = 256;

/// A token bucket: `burst` calls at once, then one every `every`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub burst: u32,
    pub every: Duration,
}

impl Pace {
    /// This pace divided among `share` planbots sending for one bot (replicas).
    pub fn shared_by(self, share: u32) -> Pace {
        let share = share.max(1);
        Pace {
            burst: (self.burst / share).max(1),
            every: self.every * share,
        }
    }

    fn limiter(self) -> Limiter {
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(self.every.max(Duration::from_micros(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        RateLimiter::direct_with_clock(quota, TokioClock(Instant::now()))
    }
}

/// How a platform's limits are kept.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Every call to one chat.
    pub calls: Pace,
    /// Messages sent to one chat.
    pub sends: Pace,
    /// Messages sent to one group chat, on top of `sends`.
    pub group_sends: Option<Pace>,
    /// Messages sent to all chats together.
    pub all_sends: Option<Pace>,
}

/// What a call does, for the buckets: a new message counts against the send limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Send,
    Other,
}

/// What a call's result asks of the lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Done (succeeded, or failed for good).
    Done,
    /// Rate limited: try again once this window has passed.
    After(Duration),
    /// A network failure: try again after a backoff.
    Backoff,
}

/// A platform's reading of one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub retry: Retry,
    /// Keep the lane shut this long even so (a route's bucket is empty).
    pub hold: Option<Duration>,
}

impl Verdict {
    pub fn done() -> Verdict {
        Verdict {
            retry: Retry::Done,
            hold: None,
        }
    }

    pub fn retry(retry: Retry) -> Verdict {
        Verdict { retry, hold: None }
    }
}

struct Lane {
    /// One call at a time, in the order they came.
    order: tokio::sync::Mutex<()>,
    calls: Limiter,
    sends: Limiter,
    group_sends: Option<Limiter>,
    state: Mutex<LaneState>,
}

struct LaneState {
    /// No call before this (a 429's window, an empty route bucket, a backoff).
    open_at: Instant,
    last_typing: Option<Instant>,
    last_sent: Option<Instant>,
    last_used: Instant,
}

impl Lane {
    fn state(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.locked()
    }

    fn hold(&self, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_HOLD);
        let mut state = self.state();
        state.open_at = state.open_at.max(until);
    }

    /// Keeps the lane shut as a result asks: a route's empty bucket, a rate limit's window.
    fn obey(&self, reading: Verdict) {
        if let Some(hold) = reading.hold {
            self.hold(hold);
        }
        if let Retry::After(wait) = reading.retry {
            self.hold(wait.saturating_add(Duration::from_millis(50)));
        }
    }
}

/// The lanes of one front end, keyed by chat.
pub struct Lanes<K> {
    platform: &'static str,
    pacing: Pacing,
    all_sends: Option<Limiter>,
    lanes: Mutex<HashMap<K, Arc<Lane>>>,
}

impl<K: Eq + Hash + Clone + std::fmt::Display> Lanes<K> {
    pub fn new(platform: &'static str, pacing: Pacing) -> Lanes<K> {
        Lanes {
            platform,
            pacing,
            all_sends: pacing.all_sends.map(Pace::limiter),
            lanes: Mutex::new(HashMap::new()),
        }
    }

    fn lane(&self, chat: &K, group: bool) -> Arc<Lane> {
        let mut lanes = self.lanes.locked();
        if lanes.len() >= RETIRE_ABOVE && !lanes.contains_key(chat) {
            let now = Instant::now();
            lanes.retain(|_, lane| {
                let state = lane.state();
                Arc::strong_count(lane) > 1
                    || state.open_at > now
                    || now.duration_since(state.last_used) < RETIRE_AFTER
            });
        }
        let pacing = self.pacing;
        let lane = lanes.entry(chat.clone()).or_insert_with(|| {
            Arc::new(Lane {
                order: tokio::sync::Mutex::new(()),
                calls: pacing.calls.limiter(),
                sends: pacing.sends.limiter(),
                group_sends: pacing.group_sends.filter(|_| group).map(Pace::limiter),
                state: Mutex::new(LaneState {
                    open_at: Instant::now(),
                    last_typing: None,
                    last_sent: None,
                    last_used: Instant::now(),
                }),
            })
        });
        lane.state().last_used = Instant::now();
        lane.clone()
    }

    /// How many lanes are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lanes.locked().len()
    }

    /// Waits until the lane is open and the buckets allow a call of this kind.
    async fn ready(&self, lane: &Lane, call: Call) {
        loop {
            let open_at = lane.state().open_at;
            if open_at <= Instant::now() {
                break;
            }
            tokio::time::sleep_until(open_at).await;
        }
        take(&lane.calls).await;
        if call == Call::Send {
            take(&lane.sends).await;
            if let Some(group) = &lane.group_sends {
                take(group).await;
            }
            if let Some(all) = &self.all_sends {
                take(all).await;
            }
        }
    }

    /// Makes one call in `chat`'s lane: waits its turn and the buckets, then retries as
    /// `verdict` reads each result (a 429's window, a network failure's backoff).
    pub async fn call<T, E, F, Fut>(
        &self,
        chat: &K,
        group: bool,
        call: Call,
        what: &str,
        mut make: F,
        verdict: impl Fn(&Result<T, E>) -> Verdict,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: IntoFuture<Output = Result<T, E>>,
    {
        let lane = self.lane(chat, group);
        let _turn = lane.order.lock().await;
        let (mut limited, mut failed) = (0u32, 0u32);
        loop {
            self.ready(&lane, call).await;
            let result = make().await;
            let reading = verdict(&result);
            lane.obey(reading);
            match reading.retry {
                Retry::After(wait) => {
                    tracing::warn!(platform = self.platform, %chat, what, wait_ms = wait.as_millis() as u64, "asked to wait");
                    if limited < RATE_LIMIT_RETRIES {
                        limited += 1;
                        continue;
                    }
                }
                Retry::Backoff if failed < NETWORK_RETRIES => {
                    failed += 1;
                    tracing::warn!(platform = self.platform, %chat, what, "call failed; retrying");
                    lane.hold(Duration::from_millis(250 * 2u64.pow(failed)));
                    continue;
                }
                Retry::Backoff | Retry::Done => {}
            }
            if call == Call::Send && result.is_ok() {
                lane.state().last_sent = Some(Instant::now());
            }
            return result;
        }
    }

    /// Shows "typing" in `chat` if nothing says not to: at most once per `every` (unless a
    /// message went out since, which ends it in the clients), never inside a rate-limit window
    /// or past an empty bucket (it is skipped, never waited for), and never after a message sent
    /// since it was asked for (a client would show "typing" under the answer). It takes its
    /// place in the lane, so it never overtakes a reply.
    pub async fn typing<T, E, Fut>(
        &self,
        chat: &K,
        group: bool,
        every: Duration,
        make: impl FnOnce() -> Fut,
        verdict: impl Fn(&Result<T, E>) -> Verdict,
    ) where
        Fut: IntoFuture<Output = Result<T, E>>,
    {
        let asked = Instant::now();
        let lane = self.lane(chat, group);
        // A message from the bot ends "typing" in the clients: after one, it may be shown again.
        let recent = |state: &LaneState| {
            state
                .last_typing
                .is_some_and(|t| t.elapsed() < every && state.last_sent.is_none_or(|sent| sent < t))
        };
        if recent(&lane.state()) {
            return;
        }
        let _turn = lane.order.lock().await;
        {
            let mut state = lane.state();
            let now = Instant::now();
            if recent(&state)
                || state.open_at > now
                || state.last_sent.is_some_and(|sent| sent >= asked)
                || lane.calls.check().is_err()
            {
                return;
            }
            state.last_typing = Some(now);
        }
        let result = make().await;
        lane.obey(verdict(&result));
    }
}

/// Takes a cell from `limiter`, waiting as long as it says.
async fn take(limiter: &Limiter) {
    while let Err(not_until) = limiter.check() {
        tokio::time::sleep(not_until.wait_time_from(limiter.clock().now())).await;
    }
}

/// A map that keeps only its newest entries: what a front end remembers about messages it sent
/// (which message holds a reply's buttons, what a progress message shows, which button presses
/// were answered) must not grow for ever.
pub struct Recent<K, V> {
    cap: usize,
    inner: Mutex<(HashMap<K, V>, VecDeque<K>)>,
}

impl<K: Eq + Hash + Clone, V: Clone> Recent<K, V> {
    pub fn new(cap: usize) -> Recent<K, V> {
        Recent {
            cap: cap.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<K, V>, &mut VecDeque<K>) -> R) -> R {
        let mut inner = self.inner.locked();
        let (map, order) = &mut *inner;
        f(map, order)
    }

    /// Remembers `value` for `key`; returns whether `key` is new.
    pub fn insert(&self, key: K, value: V) -> bool {
        let cap = self.cap;
        self.with(|map, order| {
            let fresh = map.insert(key.clone(), value).is_none();
            if fresh {
                order.push_back(key);
            }
            while map.len() > cap {
                match order.pop_front() {
                    Some(old) => {
                        map.remove(&old);
                    }
                    None => break,
                }
            }
            fresh
        })
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.with(|map, _| map.get(key).cloned())
    }

    pub fn remove(&self, key: &K) -> Option<V> {
        self.with(|map, order| {
            let value = map.remove(key)?;
            order.retain(|k| k != key);
            Some(value)
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.with(|map, _| map.len())
    }
}

#[cfg(test)]
mod tests;
