//! The cost of one readiness wait with n descriptors registered and exactly one ready, for
//! select, poll, epoll (level and edge) and io_uring; and, apart, the cost of registering
//! (epoll_ctl). The idle descriptors are eventfds with a zero counter (never ready); the
//! ready one is an eventfd with a non-zero counter that nobody reads (ready for good).
//!
//! Group and parameter names are stable so saved baselines compare across commits.

#[path = "support/criterion_config.rs"]
mod criterion_config;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 5] = [1, 10, 100, 1000, 10_000];
/// select cannot go past FD_SETSIZE (1024): its curve stops at 1000.
const SELECT_MAX: usize = 1000;

fn eventfd(value: u32) -> OwnedFd {
    // SAFETY: eventfd takes plain integers and returns a new descriptor (checked).
    let fd = unsafe { libc::eventfd(value, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is new and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// n descriptors: n - 1 idle, the last one ready.
fn descriptors(n: usize) -> Vec<OwnedFd> {
    (0..n).map(|i| eventfd(u32::from(i + 1 == n))).collect()
}

fn select_wait(c: &mut Criterion) {
    let mut group = c.benchmark_group("readiness/select");
    for n in SIZES.into_iter().filter(|&n| n <= SELECT_MAX) {
        let fds = descriptors(n);
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let max = *raw.iter().max().expect("n >= 1");
        assert!(
            max < libc::FD_SETSIZE as RawFd,
            "descriptor {max} past FD_SETSIZE"
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                // As the model does: rebuild the set (select overwrites it), then wait.
                // SAFETY: every descriptor is below FD_SETSIZE (asserted above).
                unsafe {
                    let mut set: libc::fd_set = std::mem::zeroed();
                    libc::FD_ZERO(&mut set);
                    for &fd in &raw {
                        libc::FD_SET(fd, &mut set);
                    }
                    let mut zero = libc::timeval {
                        tv_sec: 0,
                        tv_usec: 0,
                    };
                    let ready = libc::select(
                        max + 1,
                        &mut set,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        &mut zero,
                    );
                    assert_eq!(ready, 1);
                }
            })
        });
    }
    group.finish();
}

fn poll_wait(c: &mut Criterion) {
    let mut group = c.benchmark_group("readiness/poll");
    for n in SIZES {
        let fds = descriptors(n);
        let mut pollfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|f| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            // SAFETY: `pollfds` is a valid array of its length.
            b.iter(|| {
                assert_eq!(
                    unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as _, 0) },
                    1
                )
            })
        });
    }
    group.finish();
}

struct Epoll(OwnedFd);

impl Epoll {
    fn with(fds: &[OwnedFd], flags: u32) -> Epoll {
        // SAFETY: epoll_create1 returns a new descriptor (checked).
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0);
        // SAFETY: `ep` is new and ours.
        let epoll = Epoll(unsafe { OwnedFd::from_raw_fd(ep) });
        for f in fds {
            epoll.ctl(
                libc::EPOLL_CTL_ADD,
                f.as_raw_fd(),
                libc::EPOLLIN as u32 | flags,
            );
        }
        epoll
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32) {
        let mut event = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: `event` is valid for the call.
        assert_eq!(
            unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut event) },
            0
        );
    }

    fn wait(&self, events: &mut [libc::epoll_event]) -> i32 {
        // SAFETY: the kernel writes at most `events.len()` entries.
        unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                0,
            )
        }
    }
}

fn epoll_wait(c: &mut Criterion) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut group = c.benchmark_group("readiness/epoll-lt");
    for n in SIZES {
        let fds = descriptors(n);
        let epoll = Epoll::with(&fds, 0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| assert_eq!(epoll.wait(&mut events), 1))
        });
    }
    group.finish();
    // Edge-triggered reports a change once: each iteration makes a new edge (an eventfd
    // write, as data arriving would) before the wait, so this figure includes that write.
    let mut group = c.benchmark_group("readiness/epoll-et");
    for n in SIZES {
        let fds = descriptors(n);
        let epoll = Epoll::with(&fds, libc::EPOLLET as u32);
        let ready = fds.last().expect("n >= 1").as_raw_fd();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let one = 1u64;
                // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
                assert_eq!(
                    unsafe { libc::write(ready, (&one as *const u64).cast(), 8) },
                    8
                );
                assert_eq!(epoll.wait(&mut events), 1);
            })
        });
    }
    group.finish();
    // Registration: one ADD and one DEL with n descriptors already registered.
    let mut group = c.benchmark_group("readiness/epoll_ctl");
    for n in SIZES {
        let fds = descriptors(n);
        let epoll = Epoll::with(&fds, 0);
        let extra = eventfd(0);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                epoll.ctl(libc::EPOLL_CTL_ADD, extra.as_raw_fd(), libc::EPOLLIN as u32);
                epoll.ctl(libc::EPOLL_CTL_DEL, extra.as_raw_fd(), 0);
            })
        });
    }
    group.finish();
}

/// io_uring as the completion models use it: nothing is "registered" for idle descriptors
/// except requests in flight. Here n - 1 multishot poll requests wait on the idle eventfds,
/// and each iteration submits a one-shot poll on the ready one and reaps its completion.
fn uring_wait(c: &mut Criterion) {
    use io_uring::{opcode, types, IoUring};
    let mut group = c.benchmark_group("readiness/io_uring");
    for n in SIZES {
        let fds = descriptors(n);
        let Ok(mut ring) = IoUring::new(1024) else {
            eprintln!("io_uring unavailable here: readiness/io_uring skipped");
            return;
        };
        for chunk in fds[..n - 1].chunks(512) {
            for f in chunk {
                let poll = opcode::PollAdd::new(types::Fd(f.as_raw_fd()), libc::POLLIN as u32)
                    .multi(true)
                    .build()
                    .user_data(1);
                // SAFETY: the entry refers to no memory of ours.
                unsafe { ring.submission().push(&poll).expect("queue has room") };
            }
            ring.submit().expect("submit idle polls");
        }
        let ready = types::Fd(fds[n - 1].as_raw_fd());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let poll = opcode::PollAdd::new(ready, libc::POLLIN as u32)
                    .build()
                    .user_data(2);
                // SAFETY: as above.
                unsafe { ring.submission().push(&poll).expect("queue has room") };
                ring.submit_and_wait(1).expect("submit_and_wait");
                let cqe = ring.completion().next().expect("one completion");
                assert_eq!(cqe.user_data(), 2);
            })
        });
    }
    group.finish();
}

fn all(c: &mut Criterion) {
    // 10 000 descriptors plus the process's own.
    benches::runner::raise_nofile(10_064).unwrap_or_else(|e| panic!("{e}"));
    select_wait(c);
    poll_wait(c);
    epoll_wait(c);
    uring_wait(c);
}

criterion_group! {
    name = benches;
    config = criterion_config::config();
    targets = all
}
criterion_main!(benches);
