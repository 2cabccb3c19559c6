//! The daemon: settings, the socket, and the gRPC services wired onto the stores.

pub mod config;
pub mod conns;
pub mod errors;
pub mod lock;
pub mod meta;
pub mod mounts;
pub mod registries;
pub mod services;
pub mod socket;
pub mod state;

/// Gives freed heap pages back to the kernel after a large operation (import, export, GC), so
/// the daemon's idle RSS returns to its small baseline.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

use std::os::unix::fs::DirBuilderExt;

use anyhow::{Context, Result};
use tokio_stream::wrappers::ReceiverStream;

use config::Config;

/// Runs the daemon until SIGTERM or SIGINT: opens the stores, binds the socket, serves, then
/// stops accepting, lets in-flight requests finish and removes the socket.
pub fn run(config: Config) -> Result<()> {
    // One malloc arena: blocking threads come and go, and each arena they leave behind keeps
    // its freed pages, which is most of an idle daemon's RSS after an import. With two, the
    // second one's fragments held 2-3 MB after a long client session (`hack/bench-rss.sh`);
    // the blocking threads are few and mostly wait on the disk, so they rarely contend.
    // SAFETY: mallopt only sets allocator tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // One thread for all async work; the store's blocking calls run on a small pool that shrinks
    // back to nothing when idle. This keeps idle RSS small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(config.max_blocking_threads)
        .thread_keep_alive(std::time::Duration::from_secs(10))
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(config))
}

async fn serve(config: Config) -> Result<()> {
    for dir in [&config.root, &config.state] {
        // 0711 as containerd's: other users may reach a socket or a bundle by its path, but
        // list nothing (volumes' data, images' files).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // Held until berthd exits: refuses a second berthd or an offline check on this root.
    let _lock = lock::RootLock::take(&config.root, "berthd")?;
    crate::tasks::runtime::set_timeout(config.runtime_timeout);
    let state = state::State::open(&config)?;
    // The init of `--init` containers; without it only those fail (naming the path).
    match crate::tasks::init::install(&config.root) {
        Ok(p) => tracing::debug!(path = %p.display(), "init for --init containers"),
        Err(e) => tracing::warn!(root = %config.root.display(), error = %e, "writing berth-init"),
    }
    // Everything a crash left is put right before the sockets exist, so that no client sees
    // a half-recovered daemon (a build's dir, a runtime's state, a Docker container's exit not
    // yet recorded). A client that comes early finds no socket, or a stale one that refuses,
    // and can retry: clearer than one that is accepted and waits on a daemon still busy, as
    // dockerd too serves only once its restore is done.
    // Tasks whose create or removal a crash cut short: nothing is in flight yet.
    crate::check::host::recover_unfinished_tasks(&config.state);
    // Runtime state of creates cut short (no state.json), with the cgroups they recorded.
    crate::check::host::recover_unfinished_runtime_state(&config.state);
    mounts::clear_stale(&config.state);
    // The services; making them reconnects to running tasks and removes interrupted builds.
    let router = services::router(state.clone())?;
    let docker_api = match &config.docker_address {
        Some(_) => {
            let api = crate::docker::Api::new(state.clone());
            // Containers made through the Docker API come back as dockerd brings them back.
            api.restore().await;
            Some(api)
        }
        None => None,
    };
    let gid = config.group.as_deref().map(socket::group_id).transpose()?;
    let nofile = conns::raise_nofile_limit();
    let sockets = if config.docker_address.is_some() {
        2
    } else {
        1
    };
    let limits = conns::Limits::new(
        config.max_connections,
        config.header_timeout,
        nofile,
        sockets,
    );
    // The Docker socket first: clients (and tests) take the gRPC socket as the sign that
    // berthd is up.
    let docker = match (&config.docker_address, docker_api) {
        (Some(path), Some(api)) => {
            let l = socket::bind_mode(path, 0o660, gid)?;
            tracing::info!(address = %path.display(), namespace = crate::docker::NAMESPACE, "Docker API serving");
            Some((path.clone(), l, api))
        }
        _ => None,
    };
    let listener = match gid {
        Some(gid) => socket::bind_mode(&config.address, 0o660, Some(gid))?,
        None => socket::bind(&config.address)?,
    };
    tracing::info!(
        address = %config.address.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        version = services::version::VERSION,
        group = config.group.as_deref().unwrap_or("-"),
        nofile,
        max_connections = limits.max_connections,
        header_timeout = ?limits.header_timeout,
        "berthd serving"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let trimmer = tokio::spawn(conns::trim_when_quiet());
    let docker_task = docker.map(|(path, l, api)| {
        (
            path,
            tokio::spawn(crate::docker::server::serve(api, l, limits, stop_rx)),
        )
    });
    let shutdown = async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop_tx.send(true);
    };
    let res = router
        .serve_with_incoming_shutdown(
            ReceiverStream::new(conns::accept(listener, limits, "grpc", conns::Idle::Close)),
            shutdown,
        )
        .await;
    if let Err(e) = std::fs::remove_file(&config.address) {
        tracing::warn!(error = %e, "removing the socket");
    }
    if let Some((path, task)) = docker_task {
        let _ = task.await;
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(error = %e, "removing the Docker API socket");
        }
    }
    trimmer.abort();
    res.context("serving gRPC")?;
    tracing::info!("berthd stopped");
    Ok(())
}
