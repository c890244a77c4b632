//! [`HeavySlots`]: the slots heavy requests (batch get chunks, uploads) take while the store
//! works for them, and each caller's share of them.
//!
//! A request first takes a place in its caller's share (callers are keyed by token name; every
//! caller without a token shares one key), then one of the global slots, both within one
//! deadline. So one token — a fleet of CI jobs, or someone who found a read token — can hold at
//! most its share, and the rest stays free for everybody else. A caller's count lives in the
//! map only while it holds a slot: the map never grows with the number of token names seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::AppError;

/// Who holds a slot: a token's name, or `None` for every caller without a token.
type Holder = Option<String>;

/// The heavy-request slots and who holds how many.
pub struct HeavySlots {
    /// One permit per slot.
    global: Arc<Semaphore>,
    /// Slots in all.
    total: usize,
    /// Most slots one caller holds (or waits for a global slot with) at once.
    per_caller: usize,
    /// Slots each caller holds now; a caller is removed when it holds none.
    held: Mutex<HashMap<Holder, usize>>,
    /// Woken whenever a caller gives a place in its share back.
    share_freed: Notify,
}

impl HeavySlots {
    /// `total` slots (at least 1), at most `per_caller` (clamped to 1..=total) per caller.
    pub fn new(total: usize, per_caller: usize) -> Self {
        let total = total.max(1);
        HeavySlots {
            global: Arc::new(Semaphore::new(total)),
            total,
            per_caller: per_caller.clamp(1, total),
            held: Mutex::new(HashMap::new()),
            share_freed: Notify::new(),
        }
    }

    /// Slots in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Slots free right now.
    pub fn free(&self) -> usize {
        self.global.available_permits()
    }

    /// Waits at most `wait` for a place in `holder`'s share and then for a slot; past it a 503
    /// `busy` saying which of the two was missing.
    pub async fn take(
        self: &Arc<Self>,
        holder: Option<&str>,
        wait: Duration,
    ) -> Result<HeavySlot, AppError> {
        let deadline = Instant::now() + wait;
        let share = self.take_share(holder, deadline, wait).await?;
        let permit = tokio::time::timeout_at(deadline, self.global.clone().acquire_owned())
            .await
            .map_err(|_| {
                AppError::Busy(format!(
                    "the server is busy: all {} slots for batch requests stayed taken for {}s; \
                     try again shortly",
                    self.total,
                    wait.as_secs_f64()
                ))
            })?
            .expect("the heavy-request semaphore is never closed");
        Ok(HeavySlot {
            permit: Some(permit),
            _share: share,
            total: self.total,
            trim: true,
        })
    }

    async fn take_share(
        self: &Arc<Self>,
        holder: Option<&str>,
        deadline: Instant,
        wait: Duration,
    ) -> Result<Share, AppError> {
        let key: Holder = holder.map(str::to_owned);
        loop {
            // Registered before the count is looked at, so a release in between is not missed.
            let freed = self.share_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let holds = {
                let mut held = self.held.lock().expect("slot counts are never poisoned");
                let holds = held.get(&key).copied().unwrap_or(0);
                if holds < self.per_caller {
                    held.insert(key.clone(), holds + 1);
                    return Ok(Share {
                        slots: self.clone(),
                        holder: key,
                    });
                }
                holds
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                let who = match holder {
                    Some(_) => "this token holds",
                    None => "callers without a token hold",
                };
                let whose = if holder.is_some() { "its" } else { "their" };
                return Err(AppError::Busy(format!(
                    "the server is busy for this caller: {who} {holds} of {whose} {} slots for \
                     batch requests (of {} in all) and none came free within {}s; try again \
                     shortly",
                    self.per_caller,
                    self.total,
                    wait.as_secs_f64()
                )));
            }
        }
    }
}

/// A caller's place in its share; given back on drop (and the caller forgotten when it holds
/// nothing more).
struct Share {
    slots: Arc<HeavySlots>,
    holder: Holder,
}

impl Drop for Share {
    fn drop(&mut self) {
        {
            let mut held = self
                .slots
                .held
                .lock()
                .expect("slot counts are never poisoned");
            match held.get_mut(&self.holder) {
                Some(count) if *count > 1 => *count -= 1,
                _ => {
                    held.remove(&self.holder);
                }
            }
        }
        self.slots.share_freed.notify_waiters();
    }
}

/// One heavy request's slot. When the last slot in use is given back, the memory the heavy
/// requests freed goes back to the operating system, so a burst of large uploads does not leave
/// the server holding their size.
pub struct HeavySlot {
    permit: Option<OwnedSemaphorePermit>,
    _share: Share,
    total: usize,
    trim: bool,
}

impl HeavySlot {
    /// This slot gives memory back to the system on release only if the request says so at
    /// its end ([`crate::AppState::release_memory_if_idle`]): for slots taken once per chunk.
    pub fn without_trim(mut self) -> Self {
        self.trim = false;
        self
    }
}

impl Drop for HeavySlot {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let semaphore = permit.semaphore().clone();
        drop(permit);
        if self.trim && semaphore.available_permits() == self.total {
            crate::memory::release_free_memory();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_caller_holds_at_most_its_share_and_others_still_get_slots() {
        let slots = Arc::new(HeavySlots::new(4, 3));
        let mut ci = Vec::new();
        for _ in 0..3 {
            ci.push(slots.take(Some("ci"), WAIT).await.unwrap());
        }
        let err = slots.take(Some("ci"), WAIT).await.err().unwrap();
        let message = err.to_string();
        assert!(matches!(err, AppError::Busy(_)));
        assert!(
            message.contains("this token holds 3 of its 3 slots"),
            "{message}"
        );
        let other = slots.take(None, WAIT).await.unwrap();
        assert_eq!(slots.free(), 0);
        let err = slots.take(Some("laptop"), WAIT).await.err().unwrap();
        assert!(err.to_string().contains("all 4 slots"), "{err}");
        // The anonymous share is one key for every caller without a token.
        drop(other);
        ci.pop();
        assert_eq!(slots.free(), 2);
        assert!(slots.take(Some("ci"), WAIT).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_caller_gets_the_place_its_own_request_gives_back() {
        let slots = Arc::new(HeavySlots::new(8, 1));
        let first = slots.take(Some("ci"), WAIT).await.unwrap();
        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take(Some("ci"), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiting.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn no_caller_is_remembered_once_it_holds_nothing() {
        let slots = Arc::new(HeavySlots::new(4, 2));
        for n in 0..1000 {
            let name = format!("token-{n}");
            let a = slots.take(Some(&name), WAIT).await.unwrap();
            let b = slots.take(Some(&name), WAIT).await.unwrap();
            drop((a, b));
            let _ = slots.take(Some(&name), WAIT).await.unwrap();
        }
        assert!(slots.held.lock().unwrap().is_empty());
        assert_eq!(slots.free(), 4);
    }
}
