//! `POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes=` (`docker commit`):
//! a container's writable layer becomes a new image on top of the container's image.
//!
//! The layer is written as the builder writes a RUN step's (`build::write_layer` over the
//! layer tar `changes::with_layer` gives), the image as the builder writes its result
//! (`build::write_image`), and then unpacked (only the new layer is applied: the image's own
//! layers are the container's parents), so `docker run` of it needs nothing more. Its config
//! is the container's Config with the `changes` applied: Dockerfile lines (CMD, ENTRYPOINT,
//! ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL, HEALTHCHECK) parsed,
//! expanded and applied by berth-build's planner over that config, as a build would.
//! A running container is paused while its layer is read unless `pause=false`.

use std::collections::BTreeMap;

use berth_build::{BuildOptions, ImageConfig};
use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use berth_store::oci::Platform;
use http::StatusCode;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::images::tag_name;
use super::lifecycle::{rq, Meta};
use super::server::{json as json_reply, Reply, Req};
use super::{blocking, rfc3339, Api};

/// The Dockerfile instructions a change line may hold.
const CHANGE_COMMANDS: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "USER",
    "VOLUME",
    "WORKDIR",
    "STOPSIGNAL",
    "HEALTHCHECK",
];

/// The name the container's config goes by in the planned Dockerfile.
const BASE: &str = "berth-commit-base";

/// `base` with the Dockerfile lines `changes` applied (expanded against its Env as in a build).
pub fn apply_changes(base: &ImageConfig, changes: &[String]) -> Result<ImageConfig, ApiError> {
    let lines: Vec<&str> = changes
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .collect();
    if lines.is_empty() {
        return Ok(base.clone());
    }
    let mut text = format!("FROM {BASE}\n");
    for l in &lines {
        let bad = |m: String| ApiError::bad_request(format!("invalid change {l:?}: {m}"));
        let one = berth_build::parse_dockerfile(&format!("FROM {BASE}\n{l}\n"))
            .map_err(|e| bad(e.message))?;
        if one.stages.len() != 1 {
            return Err(bad("FROM is not a valid change command".into()));
        }
        for cmd in &one.stages[0].commands {
            let kw = cmd.instruction.keyword();
            if !CHANGE_COMMANDS.contains(&kw) {
                return Err(bad(format!("{kw} is not a valid change command")));
            }
        }
        text.push_str(l);
        text.push('\n');
    }
    // The container's ONBUILD triggers are its own, not run here (the planner would).
    let mut start = base.clone();
    let inherited = std::mem::take(&mut start.on_build);
    let images: BTreeMap<String, ImageConfig> = [(BASE.to_string(), start)].into();
    let plan = berth_build::plan_dockerfile(&text, &BuildOptions::default(), &images)
        .map_err(|e| ApiError::bad_request(format!("invalid change: {e}")))?;
    let mut cfg = plan
        .target_stage()
        .map(|s| s.config.clone())
        .ok_or_else(|| ApiError::internal("commit: the changes planned no stage"))?;
    let added = std::mem::take(&mut cfg.on_build);
    cfg.on_build = inherited;
    cfg.on_build.extend(added);
    Ok(cfg)
}

/// The image name `repo` and `tag` ask for (`None`: an untagged image).
fn target_name(repo: &str, tag: &str) -> Result<Option<String>, ApiError> {
    if repo.is_empty() {
        if !tag.is_empty() {
            return Err(ApiError::bad_request("tag given without a repository"));
        }
        return Ok(None);
    }
    if tag.contains(':') || tag.contains('@') || tag.contains('/') {
        return Err(ApiError::bad_request(format!(
            "invalid reference format: invalid tag {tag:?}"
        )));
    }
    let full = tag_name(repo, tag)?;
    Ok(Some(full))
}

/// `POST /commit`.
pub async fn commit(api: &Api, req: Req) -> Reply {
    let name = req.q("container").unwrap_or("").to_string();
    let repo = req.q("repo").unwrap_or("").to_string();
    let tag = req.q("tag").unwrap_or("").to_string();
    let comment = req.q("comment").unwrap_or("").to_string();
    let author = req.q("author").unwrap_or("").to_string();
    let pause = match req.q("pause") {
        None => true,
        Some(_) => req.q_bool("pause")?,
    };
    let changes = req.q_all("changes");
    let target = target_name(&repo, &tag)?;
    if name.is_empty() {
        return Err(ApiError::bad_request("a container to commit is required"));
    }
    let c = api.find_container(&name).await?;
    let meta = Meta::of(&c);
    let base: ImageConfig = serde_json::from_value(meta.config.clone())
        .map_err(|e| ApiError::internal(format!("the config of container {}: {e}", c.id)))?;
    let cfg = apply_changes(&base, &changes)?;
    let paused = pause && api.run_state(&c).await.status == "running";
    if paused {
        api.tasks
            .pause(rq(tpb::PauseTaskRequest {
                container_id: c.id.clone(),
            }))
            .await
            .map_err(|s| super::lifecycle::task_error(&format!("pausing {}", c.id), s))?;
    }
    let id = c.id.clone();
    let api2 = api.clone();
    let out = blocking(move || {
        let store = api2.state.store().clone();
        let (img, _) = super::images::find(&store, &api2.ctx(), &meta.image_id)?;
        let now = rfc3339(std::time::SystemTime::now());
        let r = store.with_temp_lease(&api2.ctx(), |ctx| {
            let layer = super::changes::with_layer(&api2, &c, |l| {
                crate::build::write_layer(
                    &store,
                    ctx,
                    &format!("docker-commit-{}-{}", c.id, fastrand::u64(..)),
                    &mut |out| {
                        l.diff(out).map_err(|e| {
                            crate::build::BuildError::Failed(format!(
                                "reading the container's changes: {}",
                                e.message
                            ))
                        })
                    },
                )
                .map_err(super::build::api_error)
            });
            let layer = match layer {
                Ok(l) => l,
                Err(e) => return Ok(Err(e)),
            };
            let mut doc = img.config.clone();
            doc["config"] = cfg.merged_into(&meta.config);
            doc["container"] = json!(c.id);
            doc["container_config"] = meta.config.clone();
            doc["created"] = json!(now);
            if !author.is_empty() {
                doc["author"] = json!(author);
            }
            if !comment.is_empty() {
                doc["comment"] = json!(comment);
            } else if let Some(o) = doc.as_object_mut() {
                o.remove("comment");
            }
            let created_by = meta.config["Cmd"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            let mut h = json!({"created": now, "created_by": created_by});
            if !author.is_empty() {
                h["author"] = json!(author);
            }
            if !comment.is_empty() {
                h["comment"] = json!(comment);
            }
            let mut layers = img.manifest.layers.clone();
            match &layer {
                Some((desc, diff_id)) => {
                    layers.push(desc.clone());
                    if !doc["rootfs"]["diff_ids"].is_array() {
                        doc["rootfs"] = json!({"type": "layers", "diff_ids": []});
                    }
                    if let Some(ids) = doc["rootfs"]["diff_ids"].as_array_mut() {
                        ids.push(json!(diff_id.to_string()));
                    }
                }
                None => h["empty_layer"] = json!(true),
            }
            if !doc["history"].is_array() {
                doc["history"] = json!([]);
            }
            if let Some(hist) = doc["history"].as_array_mut() {
                hist.push(h);
            }
            let tags: Vec<String> = target.iter().cloned().collect();
            let out = match crate::build::write_image(&store, ctx, &doc, &layers, &tags) {
                Ok(o) => o,
                Err(e) => return Ok(Err(super::build::api_error(e))),
            };
            // The new layer's snapshot, on the container's image's ones.
            let m = berth_store::oci::Descriptor::new(
                berth_store::oci::MEDIA_TYPE_OCI_MANIFEST,
                out.manifest.clone(),
                store.content_info(ctx, &out.manifest)?.size,
            );
            berth_store::images::unpack_target(&store, ctx, &m, &Platform::host())?;
            Ok(Ok(out))
        });
        r?
    })
    .await;
    if paused {
        if let Err(s) = api
            .tasks
            .resume(rq(tpb::ResumeTaskRequest {
                container_id: id.clone(),
            }))
            .await
        {
            tracing::warn!(container = %id, error = %s.message(), "docker api: resuming after a commit");
        }
    }
    let out = out?;
    for n in &out.names {
        if let Ok(rec) = api.state.store().image(&api.ctx(), n) {
            crate::daemon::services::images::publish_image(super::NAMESPACE, &rec);
        }
    }
    Ok(json_reply(
        StatusCode::CREATED,
        &json!({"Id": out.image_id.to_string()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/bin".into(), "HOME=/root".into()],
            cmd: Some(vec!["sh".into()]),
            on_build: vec!["RUN true".into()],
            ..ImageConfig::default()
        }
    }

    #[test]
    fn changes_apply_as_dockerfile_lines_expanded_against_the_env() {
        let c = apply_changes(
            &base(),
            &[
                r#"CMD ["cat","/x"]"#.to_string(),
                "ENV GREETING=hi WHERE=$HOME".to_string(),
                "EXPOSE 80".to_string(),
                "LABEL a=b".to_string(),
                "WORKDIR /srv".to_string(),
                "USER 1000".to_string(),
                "STOPSIGNAL SIGINT".to_string(),
            ],
        )
        .unwrap();
        assert_eq!(c.cmd, Some(vec!["cat".to_string(), "/x".to_string()]));
        assert_eq!(c.env_value("WHERE"), Some("/root"));
        assert_eq!(c.env_value("GREETING"), Some("hi"));
        assert!(c.exposed_ports.contains_key("80/tcp"));
        assert_eq!(c.labels["a"], "b");
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.user, "1000");
        assert_eq!(c.stop_signal, "SIGINT");
        // The container's own ONBUILD triggers stay, not run.
        assert_eq!(c.on_build, ["RUN true"]);
        assert_eq!(apply_changes(&base(), &[]).unwrap(), base());
    }

    #[test]
    fn bad_change_lines_are_refused_naming_them() {
        for (line, why) in [
            ("RUN rm -rf /", "RUN is not a valid change command"),
            ("FROM busybox", "FROM is not a valid change command"),
            ("NOPE x", "unknown instruction"),
            ("STOPSIGNAL NOTASIG", "NOTASIG"),
        ] {
            let e = apply_changes(&base(), &[line.to_string()]).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{line}");
            assert!(e.message.contains(why), "{line}: {}", e.message);
        }
    }

    #[test]
    fn names_are_checked_before_anything_is_done() {
        assert_eq!(target_name("", "").unwrap(), None);
        assert_eq!(
            target_name("app", "v1").unwrap().as_deref(),
            Some("docker.io/library/app:v1")
        );
        assert!(target_name("App", "")
            .unwrap_err()
            .message
            .contains("invalid reference format"));
        assert!(target_name("app", "a:b").is_err());
        assert!(target_name("", "v1").is_err());
    }
}
