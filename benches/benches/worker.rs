//! The cost of creating and finishing a worker: fork + exit + waitpid (from a small parent,
//! and from one with 256 MiB touched, since fork copies page tables), thread spawn + join,
//! and handing a job to a thread that already exists (a pool).

#[path = "support/criterion_config.rs"]
mod criterion_config;

use std::sync::mpsc;
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

fn fork_exit_wait() {
    // SAFETY: the child only calls _exit; the parent waits for it.
    unsafe {
        match libc::fork() {
            0 => libc::_exit(0),
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => {
                let mut status = 0;
                assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            }
        }
    }
}

fn workers(c: &mut Criterion) {
    let mut group = c.benchmark_group("worker");
    // A fork from a big parent takes milliseconds: flat sampling keeps 100 samples within the
    // measurement time instead of the 5 050 iterations linear sampling asks for.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("fork_exit_wait/small", |b| b.iter(fork_exit_wait));
    {
        // 256 MiB, every page written, so fork has 65 536 pages of page tables to copy.
        let mut big = vec![0u8; 256 << 20];
        for page in big.chunks_mut(4096) {
            page[0] = 1;
        }
        group.bench_function("fork_exit_wait/256MiB", |b| b.iter(fork_exit_wait));
        assert!(big.iter().step_by(4096).all(|&b| b == 1));
    }
    group.bench_function("thread_spawn_join", |b| {
        b.iter(|| thread::spawn(|| 1u8).join().expect("thread"))
    });
    let (jobs, inbox) = mpsc::channel::<u64>();
    let (replies, outbox) = mpsc::channel::<u64>();
    let pool = thread::spawn(move || {
        for job in inbox {
            if replies.send(job + 1).is_err() {
                break;
            }
        }
    });
    group.bench_function("pool_handoff", |b| {
        b.iter(|| {
            jobs.send(41).expect("pool alive");
            assert_eq!(outbox.recv().expect("pool reply"), 42);
        })
    });
    drop(jobs);
    pool.join().expect("pool thread");
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion_config::config();
    targets = workers
}
criterion_main!(benches);
