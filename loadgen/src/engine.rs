//! One event loop per thread (mio, edge-triggered) driving that thread's share of the
//! connections: connect, send, verify every reply byte, record latency, repeat.
//!
//! Closed loop: a connection sends its next request as soon as the last reply verified.
//! Open loop (`rate`): the thread follows a schedule of intended send times at its share of
//! the rate; a request goes out at or after its intended time on the connection that has been
//! free longest (so the load rotates over every connection, as wrk2's per-connection rates do),
//! and its latency is measured from that intended time (wrk2's correction for coordinated
//! omission), with the uncorrected latency (from the actual send) kept beside it.
//!
//! The schedule is kept as slot numbers (slot k is due k/rate after the start), so requests
//! waiting for a free connection are a range of slots, not a queue: loadgen's memory does not
//! grow with the rate or with how far behind it falls. A slot waits at most `--timeout`; one
//! that waited longer is dropped unsent and counted as missed.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::series::{LiveInterval, Recorder, ThreadSeries};
use crate::stats::Stats;
use crate::workload::{Failure, Progress, Request, Workload};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Echo,
    Rate,
    Idle,
    Churn,
    Bulk,
    Http,
}

/// What every thread runs (the whole run's settings).
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenario: Scenario,
    pub workload: Workload,
    pub addr: SocketAddr,
    pub warmup: Duration,
    pub duration: Duration,
    /// A fixed number of measured requests instead of a duration.
    pub requests: Option<u64>,
    pub timeout: Duration,
    /// How long a thread with replies outstanding polls without sleeping before it blocks
    /// (`--spin`; zero: block at once).
    pub spin: Duration,
    /// The interval of the series (`--interval`).
    pub interval: Duration,
}

/// One thread's part of the run.
#[derive(Clone, Debug)]
pub struct Share {
    pub active: usize,
    pub idle: usize,
    /// Requests per second this thread schedules (open loop only).
    pub rate: Option<f64>,
    pub quota: Option<u64>,
    /// Connection ids start here, so payloads differ across threads.
    pub first_id: u32,
}

/// How often timeouts and reconnections are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(10);
const RECONNECT_DELAY: Duration = Duration::from_millis(10);

enum State {
    Down { retry_at: Instant },
    Connecting { since: Instant },
    Ready,
    Busy,
}

struct Conn {
    id: u32,
    stream: Option<TcpStream>,
    state: State,
    request: Option<Request>,
    seq: u64,
    /// Where latency is measured from: the intended send time (open loop), the send time
    /// (closed loop), or the connect (churn).
    intended: Instant,
    sent_at: Instant,
    /// Open loop: when the connection joined the free list (its last reply was handled).
    free_since: Instant,
    idle: bool,
    /// Requests this connection completed in the measured window.
    completed: u64,
    /// Whether a connect of this connection ever completed.
    connected: bool,
}

pub struct Finished {
    pub stats: Stats,
    pub measured_from: Instant,
    pub ended: Instant,
    pub series: ThreadSeries,
    /// Requests each active connection completed in the measured window.
    pub per_connection: Vec<u64>,
}

struct Engine<'a> {
    plan: &'a Plan,
    share: Share,
    poll: Poll,
    conns: Vec<Conn>,
    stats: Stats,
    warmup: Stats,
    /// The measured window per interval; its totals become `stats`' histograms at the end.
    series: Recorder,
    measure_from: Instant,
    end: Option<Instant>,
    issued: u64,
    /// Open loop: connections free to send.
    free: VecDeque<usize>,
    scratch: Vec<u8>,
    done: &'a AtomicU64,
    /// Connections with a request in flight (state Busy).
    busy: usize,
    /// Open loop only.
    schedule: Option<Schedule>,
}

/// One thread's open-loop schedule: slot k is due `k * period_ns` after `start`. Slots
/// `oldest..released` have come due and wait for a free connection (the backlog).
#[derive(Debug)]
struct Schedule {
    start: Instant,
    period_ns: f64,
    /// Slots before this one have come due.
    released: u64,
    /// The oldest slot still waiting for a free connection.
    oldest: u64,
    /// Slots from here on are never issued (the run's end, or the request quota).
    limit: u64,
    /// The first slot of the measured window (slots before it are warmup).
    first_measured: u64,
    /// How long a slot may wait for a free connection before it counts as missed.
    max_wait_ns: u64,
}

impl Schedule {
    fn new(start: Instant, rate: f64, plan: &Plan, quota: Option<u64>) -> Schedule {
        let mut schedule = Schedule {
            start,
            period_ns: 1e9 / rate,
            released: 0,
            oldest: 0,
            limit: u64::MAX,
            first_measured: 0,
            max_wait_ns: nanos(plan.timeout),
        };
        let warmup_ns = nanos(plan.warmup);
        schedule.first_measured = match warmup_ns {
            0 => 0,
            w => schedule.due_by(w - 1),
        };
        if plan.requests.is_none() {
            let end_ns = warmup_ns.saturating_add(nanos(plan.duration));
            schedule.limit = match end_ns {
                0 => 0,
                e => schedule.due_by(e - 1),
            };
        }
        if let Some(quota) = quota {
            schedule.limit = schedule
                .limit
                .min(schedule.first_measured.saturating_add(quota));
        }
        schedule
    }

    /// When slot `k` is due, in nanoseconds after the start (saturating).
    fn at_ns(&self, k: u64) -> u64 {
        (k as f64 * self.period_ns) as u64
    }

    fn at(&self, k: u64) -> Option<Instant> {
        self.start.checked_add(Duration::from_nanos(self.at_ns(k)))
    }

    /// How many slots are due at or before `t_ns` after the start.
    fn due_by(&self, t_ns: u64) -> u64 {
        // A guess within a slot or two of the answer, then corrected.
        let mut k = ((t_ns as f64 / self.period_ns) as u64).saturating_add(1);
        while k > 0 && self.at_ns(k - 1) > t_ns {
            k -= 1;
        }
        while k < u64::MAX && self.at_ns(k) <= t_ns {
            k += 1;
        }
        k
    }

    fn ns_since_start(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.start))
    }

    /// Releases every slot due by `now`, and drops those that waited longer than allowed;
    /// returns the dropped slots as (warmup, measured) counts.
    fn advance(&mut self, now: Instant) -> (u64, u64) {
        let now_ns = self.ns_since_start(now);
        self.released = self.released.max(self.due_by(now_ns).min(self.limit));
        let Some(cutoff_ns) = now_ns.checked_sub(self.max_wait_ns.saturating_add(1)) else {
            return (0, 0);
        };
        let expired = self.due_by(cutoff_ns).min(self.released);
        if expired <= self.oldest {
            return (0, 0);
        }
        let measured = expired - self.oldest.max(self.first_measured).min(expired);
        let dropped = expired - self.oldest;
        self.oldest = expired;
        (dropped - measured, measured)
    }

    /// The oldest waiting slot's intended time, taking it off the backlog.
    fn take(&mut self) -> Option<Instant> {
        if self.oldest >= self.released {
            return None;
        }
        let at = self.at(self.oldest)?;
        self.oldest += 1;
        Some(at)
    }

    /// Measured slots released so far (sent, waiting or missed).
    fn issued(&self) -> u64 {
        self.released.saturating_sub(self.first_measured)
    }

    /// Measured slots still waiting.
    fn waiting(&self) -> u64 {
        self.released - self.oldest.max(self.first_measured).min(self.released)
    }

    /// When the next slot is due, if one is left.
    fn next(&self) -> Option<Instant> {
        (self.released < self.limit)
            .then(|| self.at(self.released))
            .flatten()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub fn run(
    plan: &Plan,
    share: Share,
    start: Instant,
    done: &AtomicU64,
    live: Option<Sender<LiveInterval>>,
) -> io::Result<Finished> {
    // Every thread starts at the same instant; nothing is sent before it.
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let measure_from = start + plan.warmup;
    let schedule = match (plan.scenario, share.rate) {
        (Scenario::Rate, Some(rate)) if rate > 0.0 => {
            Some(Schedule::new(start, rate, plan, share.quota))
        }
        _ => None,
    };
    let total = share.active + share.idle;
    let end = plan
        .requests
        .is_none()
        .then(|| measure_from + plan.duration);
    let mut engine = Engine {
        plan,
        poll: Poll::new()?,
        conns: (0..total)
            .map(|i| Conn {
                id: share.first_id + i as u32,
                stream: None,
                state: State::Down { retry_at: start },
                request: None,
                seq: 0,
                intended: start,
                sent_at: start,
                free_since: start,
                idle: i >= share.active,
                completed: 0,
                connected: false,
            })
            .collect(),
        stats: Stats::new(),
        warmup: Stats::new(),
        series: Recorder::new(measure_from, plan.interval, end, live),
        measure_from,
        end,
        issued: 0,
        free: VecDeque::new(),
        schedule,
        scratch: vec![0u8; 64 * 1024],
        done,
        busy: 0,
        share,
    };
    engine.stats.idle_total = engine.share.idle as u64;
    for i in 0..total {
        engine.connect(i, start);
    }
    engine.event_loop()?;
    let ended = Instant::now();
    engine.advance_schedule(ended);
    engine.stats.unsent = engine.schedule.as_ref().map_or(0, Schedule::waiting);
    engine.stats.idle_open = engine.count_open_idle();
    let starved = || engine.conns.iter().filter(|c| !c.idle && c.completed == 0);
    engine.stats.starved = starved().count() as u64;
    engine.stats.unconnected = starved().filter(|c| !c.connected).count() as u64;
    let per_connection = engine
        .conns
        .iter()
        .filter(|c| !c.idle)
        .map(|c| c.completed)
        .collect();
    let (series, latency, uncorrected) = engine.series.finish(ended);
    engine.stats.latency = latency;
    engine.stats.uncorrected = uncorrected;
    Ok(Finished {
        stats: engine.stats,
        measured_from: measure_from,
        ended,
        series,
        per_connection,
    })
}

impl Engine<'_> {
    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut housekeeping = Instant::now();
        loop {
            let now = Instant::now();
            if self.finished(now) {
                return Ok(());
            }
            self.release_scheduled(now);
            let wake = self.next_wake(now, housekeeping + HOUSEKEEPING);
            // Sub-millisecond pacing: a wait is asked in whole milliseconds rounded down,
            // and the last fraction is polled without sleeping.
            let wait = wake.saturating_duration_since(now);
            let wait = Duration::from_millis(wait.as_millis() as u64);
            self.wait(&mut events, now, wait)?;
            for event in events.iter() {
                let i = event.token().0;
                if matches!(self.conns[i].state, State::Connecting { .. }) {
                    self.check_connected(i);
                }
                if event.is_writable() && matches!(self.conns[i].state, State::Busy) {
                    self.flush(i);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    // A FIN already queued behind data gets no edge of its own: drain fully.
                    self.read(i, event.is_read_closed() || event.is_error());
                }
            }
            let now = Instant::now();
            if now >= housekeeping + HOUSEKEEPING {
                housekeeping = now;
                self.housekeeping(now);
            }
        }
    }

    /// Waits up to `wait` for events. While replies are outstanding it first polls without
    /// sleeping for up to `plan.spin`: a reply then is handled the moment it lands, without
    /// this thread's own wake-up (an interrupt and a reschedule, several microseconds) in its
    /// latency and in the closed loop's round trip.
    fn wait(&mut self, events: &mut Events, now: Instant, wait: Duration) -> io::Result<()> {
        let spin = if self.busy > 0 {
            self.plan.spin.min(wait)
        } else {
            Duration::ZERO
        };
        while !spin.is_zero() && now.elapsed() < spin {
            self.poll_once(events, Duration::ZERO)?;
            if !events.is_empty() {
                return Ok(());
            }
        }
        self.poll_once(events, wait.saturating_sub(spin))
    }

    fn poll_once(&mut self, events: &mut Events, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    fn finished(&self, now: Instant) -> bool {
        match (self.end, self.share.quota) {
            (Some(end), _) => now >= end,
            (None, Some(quota)) => {
                let settled = self.stats.requests + self.stats.errors.total() + self.stats.missed;
                settled >= quota
                    || (self.issued >= quota
                        && !self.conns.iter().any(|c| matches!(c.state, State::Busy)))
            }
            (None, None) => false,
        }
    }

    fn may_issue(&self, now: Instant) -> bool {
        self.end.is_none_or(|end| now < end)
            && self
                .share
                .quota
                .is_none_or(|q| now < self.measure_from || self.issued < q)
    }

    /// Open loop: every scheduled request whose time has come goes to a free connection,
    /// or waits for one (its latency clock already running), for at most `--timeout`.
    fn release_scheduled(&mut self, now: Instant) {
        self.advance_schedule(now);
        while !self.free.is_empty() {
            let Some(at) = self.schedule.as_mut().and_then(Schedule::take) else {
                return;
            };
            let i = self.free.pop_front().expect("a free connection");
            let free_since = self.conns[i].free_since;
            // Each send's own time: a burst's later sends wait behind the earlier writes.
            self.pace(at, free_since, Instant::now());
            self.issue(i, at);
        }
    }

    /// Brings the schedule up to `now`, counting the requests it dropped as missed.
    fn advance_schedule(&mut self, now: Instant) {
        let Some(schedule) = self.schedule.as_mut() else {
            return;
        };
        let (warmup, measured) = schedule.advance(now);
        self.issued = schedule.issued();
        self.warmup.missed += warmup;
        self.stats.missed += measured;
    }

    fn next_wake(&self, now: Instant, housekeeping: Instant) -> Instant {
        let mut wake = housekeeping;
        if let Some(at) = self.schedule.as_ref().and_then(Schedule::next) {
            wake = wake.min(at);
        }
        if let Some(end) = self.end {
            wake = wake.min(end);
        }
        wake.max(now)
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let conn = &mut self.conns[i];
        conn.request = None;
        if let Some(mut old) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut old);
        }
        match TcpStream::connect(self.plan.addr) {
            Ok(mut stream) => {
                let registered = self.poll.registry().register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                );
                if registered.is_err() {
                    self.fail_connect(i, now);
                    return;
                }
                let conn = &mut self.conns[i];
                conn.stream = Some(stream);
                conn.state = State::Connecting { since: now };
            }
            Err(_) => self.fail_connect(i, now),
        }
    }

    fn fail_connect(&mut self, i: usize, now: Instant) {
        self.stats_for(now).errors.connect += 1;
        if now >= self.measure_from {
            self.series.error(now);
        }
        let conn = &mut self.conns[i];
        conn.stream = None;
        conn.state = State::Down {
            retry_at: now + RECONNECT_DELAY,
        };
    }

    fn check_connected(&mut self, i: usize) {
        let now = Instant::now();
        let Some(stream) = self.conns[i].stream.as_ref() else {
            return;
        };
        match (stream.take_error(), stream.peer_addr()) {
            (Ok(None), Ok(_)) => {
                let _ = stream.set_nodelay(true);
                let since = match self.conns[i].state {
                    State::Connecting { since } => since,
                    _ => now,
                };
                self.stats_for(since).connects += 1;
                self.conns[i].state = State::Ready;
                self.conns[i].connected = true;
                self.on_ready(i, since);
            }
            (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => {} // not yet
            _ => self.fail_connect(i, now),
        }
    }

    /// A connection is free: what it does next depends on the scenario.
    fn on_ready(&mut self, i: usize, connected_since: Instant) {
        if self.conns[i].idle {
            return; // holds its connection open, sends nothing
        }
        let now = Instant::now();
        match self.plan.scenario {
            Scenario::Rate => {
                self.advance_schedule(now);
                match self.schedule.as_mut().and_then(Schedule::take) {
                    Some(at) => {
                        // A connection already on the free list could have carried this
                        // slot: from its time on, the delay is loadgen's, not the server's.
                        let free_since = self
                            .free
                            .front()
                            .map_or(now, |&f| self.conns[f].free_since.min(now));
                        self.pace(at, free_since, now);
                        self.issue(i, at);
                    }
                    None => {
                        self.conns[i].free_since = now;
                        self.free.push_back(i);
                    }
                }
            }
            Scenario::Churn if self.may_issue(now) => self.issue(i, connected_since),
            _ if self.may_issue(now) => {
                if now >= self.measure_from {
                    self.issued += 1;
                }
                self.issue(i, now);
            }
            _ => {}
        }
    }

    /// Open loop: splits how late a slot due at `due` goes out at `now` on a connection free
    /// since `free_since` into the time it waited for a free connection (every one had a
    /// request in flight: the server had not answered yet) and the time loadgen itself took
    /// to send once both were there (its own pacing: a late wake-up, a busy loop, the VM).
    fn pace(&mut self, due: Instant, free_since: Instant, now: Instant) {
        if due < self.measure_from {
            return;
        }
        let ready = due.max(free_since);
        let micros = |d: Duration| d.as_micros() as u64;
        self.stats
            .wait
            .saturating_record(micros(ready.saturating_duration_since(due)));
        self.stats
            .late
            .saturating_record(micros(now.saturating_duration_since(ready)));
    }

    fn issue(&mut self, i: usize, intended: Instant) {
        let conn = &mut self.conns[i];
        conn.request = Some(self.plan.workload.request(conn.id, conn.seq));
        conn.seq += 1;
        conn.intended = intended;
        conn.sent_at = Instant::now();
        conn.state = State::Busy;
        self.busy += 1;
        if self.plan.scenario == Scenario::Churn && intended >= self.measure_from {
            self.issued += 1;
        }
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let (Some(stream), Some(request)) = (conn.stream.as_mut(), conn.request.as_mut()) else {
            return;
        };
        while let Some(chunk) = request.unsent() {
            match stream.write(chunk) {
                Ok(n) => request.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let now = Instant::now();
                    self.fail(i, now, ErrorClass::Reset);
                    return;
                }
            }
        }
    }

    fn read(&mut self, i: usize, to_eof: bool) {
        loop {
            if matches!(
                self.conns[i].state,
                State::Connecting { .. } | State::Down { .. }
            ) {
                return;
            }
            let Some(stream) = self.conns[i].stream.as_mut() else {
                return;
            };
            let n = match stream.read(&mut self.scratch) {
                Ok(0) => {
                    let now = Instant::now();
                    // An HTTP body without a length ends here; any other reply was cut short.
                    match self.conns[i].request.as_mut().and_then(Request::eof) {
                        Some(outcome) => {
                            self.settle(i, now, outcome);
                        }
                        None => self.fail(i, now, ErrorClass::Reset),
                    }
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.fail(i, Instant::now(), ErrorClass::Reset);
                    return;
                }
            };
            let now = Instant::now();
            if now >= self.measure_from {
                self.stats.bytes_read += n as u64;
            }
            let Some(request) = self.conns[i].request.as_mut() else {
                self.fail(i, now, ErrorClass::Protocol); // bytes nobody asked for
                return;
            };
            let outcome = request.receive(&self.scratch[..n]);
            if !self.settle(i, now, outcome) {
                return;
            }
            if n < self.scratch.len() && !to_eof {
                return; // a short read: drained (epoll raises a new edge for new bytes)
            }
        }
    }

    /// Acts on what a reply's bytes (or the close) made of the request in flight; false when
    /// the connection is gone (failed, or closed by the server and being reopened).
    fn settle(&mut self, i: usize, now: Instant, outcome: Result<Progress, Failure>) -> bool {
        match outcome {
            Ok(Progress::More) => true,
            Ok(Progress::Done) => {
                self.complete(i, now, false);
                true
            }
            Ok(Progress::DoneClose) => {
                self.complete(i, now, true);
                false
            }
            Err(Failure::Mismatch) => {
                self.fail(i, now, ErrorClass::Mismatch);
                false
            }
            Err(Failure::Protocol) => {
                self.fail(i, now, ErrorClass::Protocol);
                false
            }
        }
    }

    /// A verified reply. `closing`: the server ends the connection after it, so the next
    /// request goes on a new one.
    fn complete(&mut self, i: usize, now: Instant, closing: bool) {
        let conn = &mut self.conns[i];
        let request = conn
            .request
            .take()
            .expect("a completed request was in flight");
        let (intended, sent_at) = (conn.intended, conn.sent_at);
        conn.state = State::Ready;
        self.busy -= 1;
        let micros = |d: Duration| (d.as_micros() as u64).max(1);
        let (corrected, uncorrected) = (micros(now - intended), micros(now - sent_at));
        let stats = if intended >= self.measure_from {
            self.done.fetch_add(1, Ordering::Relaxed);
            conn.completed += 1;
            // Into this interval's histograms; the run's are their sum.
            self.series.record(now, corrected, uncorrected);
            &mut self.stats
        } else {
            self.warmup.latency.saturating_record(corrected);
            self.warmup.uncorrected.saturating_record(uncorrected);
            &mut self.warmup
        };
        stats.requests += 1;
        stats.up_bytes += request.up_bytes;
        stats.down_bytes += request.down_bytes;
        if closing {
            stats.server_closes += 1;
        }
        if closing || self.plan.scenario == Scenario::Churn {
            self.connect(i, now);
        } else {
            self.on_ready(i, now);
        }
    }

    fn fail(&mut self, i: usize, now: Instant, class: ErrorClass) {
        let from = match self.conns[i].state {
            State::Busy => {
                self.busy -= 1;
                self.conns[i].intended
            }
            _ => now,
        };
        if from >= self.measure_from {
            self.series.error(now);
        }
        let errors = &mut self.stats_for(from).errors;
        match class {
            ErrorClass::Reset => errors.reset += 1,
            ErrorClass::Timeout => errors.timeout += 1,
            ErrorClass::Mismatch => errors.mismatch += 1,
            ErrorClass::Protocol => errors.protocol += 1,
        }
        self.free.retain(|&f| f != i);
        let conn = &mut self.conns[i];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.request = None;
        conn.state = State::Down {
            retry_at: now + RECONNECT_DELAY,
        };
    }

    fn housekeeping(&mut self, now: Instant) {
        if now >= self.measure_from {
            self.series.roll(now);
        }
        for i in 0..self.conns.len() {
            match self.conns[i].state {
                State::Busy if now >= self.conns[i].sent_at + self.plan.timeout => {
                    self.fail(i, now, ErrorClass::Timeout)
                }
                State::Connecting { since } if now >= since + self.plan.timeout => {
                    self.fail_connect(i, now)
                }
                State::Down { retry_at } if now >= retry_at && self.may_issue(now) => {
                    self.connect(i, now)
                }
                _ => {}
            }
        }
    }

    fn stats_for(&mut self, at: Instant) -> &mut Stats {
        if at >= self.measure_from {
            &mut self.stats
        } else {
            &mut self.warmup
        }
    }

    /// Idle connections still open: a read that would block means the server kept it.
    fn count_open_idle(&mut self) -> u64 {
        let mut open = 0;
        for conn in self.conns.iter_mut().filter(|c| c.idle) {
            if let (Some(stream), State::Ready) = (conn.stream.as_mut(), &conn.state) {
                let mut byte = [0u8; 1];
                if matches!(stream.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                {
                    open += 1;
                }
            }
        }
        open
    }
}

#[derive(Clone, Copy)]
enum ErrorClass {
    Reset,
    Timeout,
    Mismatch,
    Protocol,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(warmup_ms: u64, duration_ms: u64, timeout_ms: u64) -> Plan {
        Plan {
            scenario: Scenario::Rate,
            workload: Workload::Echo { size: 1 },
            addr: "127.0.0.1:1".parse().unwrap(),
            warmup: Duration::from_millis(warmup_ms),
            duration: Duration::from_millis(duration_ms),
            requests: None,
            timeout: Duration::from_millis(timeout_ms),
            spin: Duration::ZERO,
            interval: Duration::from_millis(100),
        }
    }

    #[test]
    fn a_schedule_ends_with_the_run_and_splits_warmup_from_measured() {
        let start = Instant::now();
        // 1000/s: 500 warmup slots (0 to 499 ms), then 1000 measured.
        let mut s = Schedule::new(start, 1000.0, &plan(500, 1000, 100_000), None);
        assert_eq!((s.first_measured, s.limit), (500, 1500));
        assert_eq!(s.advance(start + Duration::from_secs(60)), (0, 0));
        assert_eq!(s.released, 1500, "nothing is due after the run's end");
        assert_eq!(s.waiting(), 1000);
        assert_eq!(s.take(), Some(start));
        assert_eq!(s.take(), Some(start + Duration::from_millis(1)));
        let quota = Schedule::new(start, 1000.0, &plan(500, 1000, 10_000), Some(7));
        assert_eq!(quota.limit, 507);
    }

    #[test]
    fn a_schedule_far_behind_drops_what_waited_past_the_timeout_in_constant_memory() {
        let start = Instant::now();
        // A billion a second for 10 s, nothing sent, a 1 s timeout: at 3 s every slot due
        // before 2 s is missed, and a second of slots waits.
        let mut s = Schedule::new(start, 1e9, &plan(0, 10_000, 1000), None);
        let (warmup, missed) = s.advance(start + Duration::from_secs(3));
        assert_eq!(warmup, 0);
        assert!(
            (1_999_999_990..=2_000_000_000).contains(&missed),
            "{missed}"
        );
        assert!(
            (1_000_000_000..=1_000_000_010).contains(&s.waiting()),
            "{}",
            s.waiting()
        );
        let oldest = s.take().unwrap();
        assert!(oldest >= start + Duration::from_millis(1999), "{oldest:?}");
        // Expired slots are split between warmup and measured.
        let mut s = Schedule::new(start, 1000.0, &plan(1000, 10_000, 500), None);
        assert_eq!(s.advance(start + Duration::from_millis(2000)), (1000, 500));
    }
}
