//! Measures what a container start costs in cgroup work on this host:
//! `cargo run --release -p berth-cgroups --example lifecycle_bench [ITERATIONS]` (as root).
//! Each iteration resolves, creates, sets memory/cpu/pids limits and adds a live `sleep`
//! process; then the process moves on to the next cgroup and the previous one is destroyed.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_cgroups::Cgroup;
use oci_spec::runtime::LinuxResources;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let res: LinuxResources = serde_json::from_str(
        r#"{"memory":{"limit":268435456},"cpu":{"shares":512,"quota":50000,"period":100000},
            "pids":{"limit":100},"devices":[{"allow":false,"access":"rwm"},
            {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]}"#,
    )?;
    let mut child = Command::new("sleep").arg("600").spawn()?;
    let pid = child.id() as i32;
    let mut samples: [Vec<Duration>; 5] = Default::default();
    let mut prev: Option<Cgroup> = None;
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        for i in 0..n {
            let t0 = Instant::now();
            let mut cg = Cgroup::resolve(
                Some(&format!("/berth-bench-{}/{i}", std::process::id())),
                "x",
            )?;
            let t1 = Instant::now();
            cg.create()?;
            let t2 = Instant::now();
            cg.set(&res)?;
            let t3 = Instant::now();
            cg.add_process(pid)?;
            let t4 = Instant::now();
            if let Some(p) = prev.take() {
                p.destroy()?;
            }
            let t5 = Instant::now();
            for (k, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]
                .into_iter()
                .enumerate()
            {
                samples[k].push(d);
            }
            prev = Some(cg);
        }
        Ok(())
    };
    let mut run = run;
    let result = run();
    let _ = child.kill();
    let _ = child.wait();
    if let Some(p) = prev.take() {
        std::thread::sleep(Duration::from_millis(50));
        p.destroy()?;
    }
    let _ = std::fs::read_dir("/sys/fs/cgroup").map(|it| {
        for e in it.flatten() {
            let _ =
                std::fs::remove_dir(e.path().join(format!("berth-bench-{}", std::process::id())));
        }
    });
    result?;
    let names = ["resolve", "create", "set", "add_process", "destroy(prev)"];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut start_cost = vec![Duration::ZERO; n as usize];
    for (name, mut v) in names.iter().zip(samples) {
        if *name != "destroy(prev)" {
            for (acc, d) in start_cost.iter_mut().zip(&v) {
                *acc += *d;
            }
        }
        v.sort();
        let mean = v.iter().sum::<Duration>() / n;
        println!(
            "{name:>14}: median {:>7.1} µs  p90 {:>7.1} µs  mean {:>7.1} µs",
            us(v[v.len() / 2]),
            us(v[v.len() * 9 / 10]),
            us(mean)
        );
    }
    start_cost.sort();
    println!(
        "resolve+create+set+add_process: median {:.1} µs  p90 {:.1} µs over {n}",
        us(start_cost[start_cost.len() / 2]),
        us(start_cost[start_cost.len() * 9 / 10])
    );
    Ok(())
}
