use super::*;

fn pacing(burst: u32, every_ms: u64) -> Pacing {
    let pace = Pace {
        burst,
        every: Duration::from_millis(every_ms),
    };
    Pacing {
        calls: Pace {
            burst: 100,
            every: Duration::from_millis(1),
        },
        sends: pace,
        group_sends: None,
        all_sends: None,
    }
}

async fn send(lanes: &Lanes<u64>, chat: u64) -> Instant {
    lanes
        .call(
            &chat,
            false,
            Call::Send,
            "send",
            || async { Ok::<_, ()>(Instant::now()) },
            |_| Verdict::done(),
        )
        .await
        .unwrap_or_else(|()| Instant::now())
}

#[tokio::test(start_paused = true)]
async fn a_burst_goes_at_once_then_the_sustained_rate() {
    let lanes = Lanes::new("test", pacing(3, 1_000));
    let start = Instant::now();
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(send(&lanes, 1).await.duration_since(start));
    }
    assert_eq!(&times[..3], &[Duration::ZERO; 3]);
    assert_eq!(times[3], Duration::from_secs(1));
    assert_eq!(times[4], Duration::from_secs(2));
    // Another chat has its own bucket.
    assert_eq!(send(&lanes, 2).await.duration_since(start), times[4]);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_holds_the_lane_for_its_window_then_retries() {
    let lanes: Lanes<u64> = Lanes::new("test", pacing(10, 10));
    let start = Instant::now();
    let attempts = Mutex::new(Vec::new());
    let result = lanes
        .call(
            &7,
            false,
            Call::Send,
            "send",
            || {
                let mut attempts = attempts.lock().unwrap();
                attempts.push(Instant::now().duration_since(start));
                let n = attempts.len();
                async move { if n == 1 { Err(3u64) } else { Ok(n) } }
            },
            |r| match r {
                Err(secs) => Verdict::retry(Retry::After(Duration::from_secs(*secs))),
                Ok(_) => Verdict::done(),
            },
        )
        .await;
    assert_eq!(result, Ok(2));
    let attempts = attempts.into_inner().unwrap();
    assert!(attempts[1] >= Duration::from_secs(3), "{attempts:?}");
    // The next call in that chat also waited for the window, not only the retry.
    assert!(send(&lanes, 7).await.duration_since(start) >= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_huge_wait_is_capped() {
    let lanes: Lanes<u64> = Lanes::new("test", pacing(10, 10));
    let start = Instant::now();
    let _ = lanes
        .call(
            &1,
            false,
            Call::Other,
            "x",
            || async { Err::<(), _>(()) },
            |_| Verdict::retry(Retry::After(Duration::from_secs(u64::MAX / 4))),
        )
        .await;
    let waited = Instant::now().duration_since(start);
    assert!(waited <= MAX_HOLD * (RATE_LIMIT_RETRIES + 1), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn typing_never_follows_a_sent_answer_nor_waits() {
    let lanes: Lanes<u64> = Lanes::new("test", pacing(1, 1_000));
    let typed = Mutex::new(0);
    let type_once = || async {
        lanes
            .typing(
                &1,
                false,
                Duration::from_secs(4),
                || async {
                    *typed.lock().unwrap() += 1;
                    Ok::<_, ()>(())
                },
                |_| Verdict::done(),
            )
            .await
    };
    type_once().await;
    type_once().await;
    assert_eq!(
        *typed.lock().unwrap(),
        1,
        "typing is sent at most every 4 s"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    // A typing asked for before an answer that went out first is dropped.
    let lane = lanes.lane(&1, false);
    lane.state().last_sent = Some(Instant::now() + Duration::from_millis(1));
    type_once().await;
    assert_eq!(*typed.lock().unwrap(), 1);
}

#[test]
fn recent_keeps_only_the_newest() {
    let recent = Recent::new(2);
    assert!(recent.insert(1, "a"));
    assert!(recent.insert(2, "b"));
    assert!(!recent.insert(2, "c"));
    assert!(recent.insert(3, "d"));
    assert_eq!(recent.len(), 2);
    assert_eq!(recent.get(&1), None);
    assert_eq!(recent.get(&2), Some("c"));
    assert_eq!(recent.remove(&3), Some("d"));
    assert_eq!(recent.len(), 1);
}

#[tokio::test]
async fn idle_lanes_are_retired() {
    let lanes: Lanes<u64> = Lanes::new("test", pacing(10, 1));
    for chat in 0..RETIRE_ABOVE as u64 {
        send(&lanes, chat).await;
    }
    {
        let map = lanes.lanes.lock().unwrap();
        for lane in map.values() {
            lane.state().last_used = Instant::now() - RETIRE_AFTER;
        }
    }
    send(&lanes, 10_000).await;
    assert_eq!(lanes.len(), 1);
}
