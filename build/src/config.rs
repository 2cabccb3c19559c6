//! Image-config effects of instructions.
//!
//! [`ImageConfig`] has the field names of the `config` object of a Docker/OCI image
//! (`Env`, `Cmd`, `ExposedPorts`, ...), so it serializes straight into an image config.
//! [`ConfigBuilder`] applies a stage's expanded instructions to its base image's config
//! the way the builder does (ENV replaces a variable in place, WORKDIR is relative to
//! the previous one, ENTRYPOINT clears an inherited CMD, ...). RUN, COPY, ADD and ARG
//! change no config. [`onbuild_triggers`] parses a base image's `OnBuild` triggers so
//! the planner can run them right after FROM.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ParseError;
use crate::instructions::{self, Command, Healthcheck, Instruction};
use crate::parser;

/// The default PATH of a container when the image sets none (as BuildKit gives
/// `FROM scratch`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The shell used for shell-form commands when no SHELL is set.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// The `{}` values of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `Healthcheck` of an image config (durations in nanoseconds, 0 = default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub interval: u64,
    /// Time before a check is considered hung.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub timeout: u64,
    /// Start-up time during which failures do not count.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub start_period: u64,
    /// Time between checks during the start period.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub start_interval: u64,
    /// Consecutive failures before unhealthy.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero_u32"
    )]
    pub retries: u32,
}

/// Docker writes `null` for empty lists and maps; read it as empty.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// The runtime configuration of an image, with Docker's JSON field names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// `USER`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    /// `EXPOSE`: `"80/tcp": {}`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `ENV`: `KEY=value`, in definition order.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `VOLUME`: `"/data": {}`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, Empty>,
    /// `WORKDIR`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    /// `LABEL` (and `MAINTAINER` as `maintainer`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    /// `SHELL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// `ONBUILD` triggers, run by builds that use this image as a base.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
}

impl ImageConfig {
    /// The config of `FROM scratch`: only the default PATH.
    pub fn scratch() -> ImageConfig {
        ImageConfig {
            env: vec![format!("PATH={DEFAULT_PATH}")],
            ..ImageConfig::default()
        }
    }

    /// The value of an environment variable of the config.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|kv| match kv.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                _ => None,
            })
    }

    /// Sets `key=value` in `Env`, replacing an existing entry in place.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => self.env.push(entry),
        }
    }

    /// The JSON names of the fields this struct models.
    pub const FIELDS: [&'static str; 12] = [
        "User",
        "ExposedPorts",
        "Env",
        "Entrypoint",
        "Cmd",
        "Healthcheck",
        "Volumes",
        "WorkingDir",
        "Labels",
        "StopSignal",
        "Shell",
        "OnBuild",
    ];

    /// This config written over `base` (a full image `config` object, e.g. the base
    /// image's): the modeled fields are replaced (or removed when empty here), every
    /// other field of `base` (`ArgsEscaped`, `Hostname`, ...) is kept.
    pub fn merged_into(&self, base: &serde_json::Value) -> serde_json::Value {
        let mut out = match base {
            serde_json::Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        let ours = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        for field in Self::FIELDS {
            match ours.get(field) {
                Some(v) => out.insert(field.to_string(), v.clone()),
                None => out.remove(field),
            };
        }
        serde_json::Value::Object(out)
    }

    /// The shell for shell-form commands: `Shell` or `/bin/sh -c`.
    pub fn shell_or_default(&self) -> Vec<String> {
        self.shell.clone().unwrap_or_else(default_shell)
    }
}

/// Applies a stage's instructions to its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigBuilder {
    /// The config so far.
    pub config: ImageConfig,
    cmd_set: bool,
}

impl ConfigBuilder {
    /// Starts from a base image's config. The base's `OnBuild` triggers are consumed by
    /// this build (see [`onbuild_triggers`]) and not inherited.
    pub fn new(mut base: ImageConfig) -> ConfigBuilder {
        base.on_build.clear();
        ConfigBuilder {
            config: base,
            cmd_set: false,
        }
    }

    /// Applies one expanded instruction. Errors are messages without location.
    pub fn apply(&mut self, instruction: &Instruction) -> Result<(), String> {
        let c = &mut self.config;
        match instruction {
            Instruction::Env(kvs) => {
                for kv in kvs {
                    c.set_env(&kv.key, &kv.value);
                }
            }
            Instruction::Label(kvs) => {
                for kv in kvs {
                    c.labels.insert(kv.key.clone(), kv.value.clone());
                }
            }
            Instruction::Maintainer(m) => {
                c.labels.insert("maintainer".to_string(), m.clone());
            }
            Instruction::Cmd(cl) => {
                c.cmd = Some(if cl.shell_form {
                    let mut v = c.shell_or_default();
                    v.extend(cl.args.iter().cloned());
                    v
                } else {
                    cl.args.clone()
                });
                self.cmd_set = true;
            }
            Instruction::Entrypoint(cl) => {
                c.entrypoint = if cl.args.is_empty() {
                    None
                } else if cl.shell_form {
                    let mut v = c.shell_or_default();
                    v.extend(cl.args.iter().cloned());
                    Some(v)
                } else {
                    Some(cl.args.clone())
                };
                // An ENTRYPOINT resets a CMD inherited from the base image.
                if !self.cmd_set {
                    c.cmd = None;
                }
            }
            Instruction::Workdir(dir) => {
                let joined = if dir.starts_with('/') {
                    dir.clone()
                } else {
                    let cur = if c.working_dir.is_empty() {
                        "/"
                    } else {
                        &c.working_dir
                    };
                    format!("{cur}/{dir}")
                };
                c.working_dir = crate::ignore::clean_path(&joined);
            }
            Instruction::User(u) => c.user = u.clone(),
            Instruction::Expose(specs) => {
                for spec in specs {
                    for p in parse_port_spec(spec)? {
                        c.exposed_ports.insert(p, Empty {});
                    }
                }
            }
            Instruction::Volume(vols) => {
                for v in vols {
                    c.volumes.insert(v.clone(), Empty {});
                }
            }
            Instruction::StopSignal(sig) => {
                validate_signal(sig)?;
                c.stop_signal = sig.clone();
            }
            Instruction::Healthcheck(Healthcheck::None) => {
                c.healthcheck = Some(HealthConfig {
                    test: vec!["NONE".to_string()],
                    ..HealthConfig::default()
                })
            }
            Instruction::Healthcheck(Healthcheck::Cmd {
                test,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            }) => {
                c.healthcheck = Some(HealthConfig {
                    test: test.clone(),
                    interval: interval.unwrap_or(0),
                    timeout: timeout.unwrap_or(0),
                    start_period: start_period.unwrap_or(0),
                    start_interval: start_interval.unwrap_or(0),
                    retries: retries.unwrap_or(0),
                })
            }
            Instruction::Shell(sh) => c.shell = Some(sh.clone()),
            Instruction::Onbuild(o) => c.on_build.push(o.expression.clone()),
            Instruction::From(_)
            | Instruction::Run(_)
            | Instruction::Copy(_)
            | Instruction::Add(_)
            | Instruction::Arg(_) => {}
        }
        Ok(())
    }
}

/// Expands an EXPOSE spec (`80`, `80/udp`, `8000-8002/tcp`) into `port/proto` keys.
pub fn parse_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let bad = || format!("invalid containerPort: {ports}");
    let parse = |s: &str| s.parse::<u16>().map_err(|_| bad());
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!(
            "invalid range specified for container port: {ports}"
        ));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// Checks a STOPSIGNAL value: a signal number, a name with or without `SIG`, or
/// `RTMIN+n`/`RTMAX-n`.
pub fn validate_signal(sig: &str) -> Result<(), String> {
    let bad = || format!("Invalid signal: {sig}");
    if let Ok(n) = sig.parse::<i64>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(bad())
        };
    }
    let upper = sig.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rt_ok = |rest: &str, sign: char| {
        rest.is_empty()
            || rest
                .strip_prefix(sign)
                .and_then(|n| n.parse::<u8>().ok())
                .is_some_and(|n| n <= 15)
    };
    let ok = SIGNALS.contains(&name)
        || matches!(name, "IOT" | "CLD" | "POLL")
        || name.strip_prefix("RTMIN").is_some_and(|r| rt_ok(r, '+'))
        || name.strip_prefix("RTMAX").is_some_and(|r| rt_ok(r, '-'));
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Parses the `OnBuild` triggers of a base image's config into commands, reported at
/// `from_line` (the FROM that uses the image). Triggers are parsed with the default
/// escape character, as BuildKit does.
pub fn onbuild_triggers(
    config: &ImageConfig,
    from_line: usize,
) -> Result<Vec<Command>, ParseError> {
    let mut out = Vec::new();
    for trigger in &config.on_build {
        let df = parser::parse(trigger).map_err(|e| ParseError::new(from_line, e.message))?;
        for node in &df.nodes {
            let mut cmd = instructions::parse_node(node, df.escape)
                .map_err(|e| ParseError::new(from_line, e.message))?;
            if matches!(
                cmd.instruction,
                Instruction::From(_) | Instruction::Maintainer(_) | Instruction::Onbuild(_)
            ) {
                return Err(ParseError::new(
                    from_line,
                    format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        cmd.instruction.keyword()
                    ),
                ));
            }
            cmd.line = from_line;
            cmd.end_line = from_line;
            out.push(cmd);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::{CommandLine, KeyValue, OnBuild};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    fn shell(args: &[&str]) -> CommandLine {
        CommandLine {
            args: s(args),
            shell_form: true,
            files: vec![],
        }
    }

    fn exec(args: &[&str]) -> CommandLine {
        CommandLine {
            args: s(args),
            shell_form: false,
            files: vec![],
        }
    }

    #[test]
    fn effects() {
        let base = ImageConfig {
            env: s(&["PATH=/bin", "A=1"]),
            cmd: Some(s(&["sh"])),
            working_dir: "/base".into(),
            on_build: s(&["RUN x"]),
            ..ImageConfig::default()
        };
        let mut b = ConfigBuilder::new(base);
        assert!(b.config.on_build.is_empty());
        let steps = [
            Instruction::Env(vec![kv("A", "2"), kv("B", "x y")]),
            Instruction::Workdir("app".into()),
            Instruction::Workdir("../srv/./x".into()),
            Instruction::User("app:app".into()),
            Instruction::Expose(s(&["80", "53/UDP", "7000-7001"])),
            Instruction::Volume(s(&["/data"])),
            Instruction::Label(vec![kv("a", "b")]),
            Instruction::Maintainer("me".into()),
            Instruction::StopSignal("SIGTERM".into()),
            Instruction::Shell(s(&["/bin/bash", "-c"])),
            Instruction::Entrypoint(shell(&["run.sh"])),
            Instruction::Onbuild(OnBuild {
                expression: "RUN make".into(),
                trigger: Box::new(Instruction::User("ignored".into())),
            }),
        ];
        for st in &steps {
            b.apply(st).expect("applies");
        }
        let c = &b.config;
        assert_eq!(c.env, s(&["PATH=/bin", "A=2", "B=x y"]));
        assert_eq!(c.working_dir, "/base/srv/x");
        assert_eq!(c.user, "app:app");
        assert_eq!(
            c.exposed_ports.keys().cloned().collect::<Vec<_>>(),
            s(&["53/udp", "7000/tcp", "7001/tcp", "80/tcp"])
        );
        assert_eq!(c.labels.get("maintainer").map(String::as_str), Some("me"));
        assert_eq!(c.entrypoint, Some(s(&["/bin/bash", "-c", "run.sh"])));
        assert_eq!(c.cmd, None, "ENTRYPOINT clears the inherited CMD");
        assert_eq!(c.on_build, s(&["RUN make"]));
        let json = serde_json::to_value(c).expect("serializes");
        assert_eq!(json["Env"][1], "A=2");
        assert_eq!(json["WorkingDir"], "/base/srv/x");
        assert_eq!(json["ExposedPorts"]["80/tcp"], serde_json::json!({}));
        assert_eq!(json["Volumes"]["/data"], serde_json::json!({}));
        assert_eq!(json["StopSignal"], "SIGTERM");
        assert_eq!(json["Shell"][0], "/bin/bash");
        assert_eq!(json["OnBuild"][0], "RUN make");
        assert!(json.get("Cmd").is_none());
    }

    #[test]
    fn cmd_then_entrypoint_keeps_cmd() {
        let mut b = ConfigBuilder::new(ImageConfig::default());
        b.apply(&Instruction::Cmd(exec(&["a"]))).expect("cmd");
        b.apply(&Instruction::Entrypoint(exec(&["e"])))
            .expect("entrypoint");
        assert_eq!(b.config.cmd, Some(s(&["a"])));
        b.apply(&Instruction::Entrypoint(exec(&[])))
            .expect("entrypoint []");
        assert_eq!(b.config.entrypoint, None);
        b.apply(&Instruction::Cmd(shell(&["echo hi"])))
            .expect("cmd");
        assert_eq!(b.config.cmd, Some(s(&["/bin/sh", "-c", "echo hi"])));
    }

    #[test]
    fn healthcheck_json() {
        let mut b = ConfigBuilder::new(ImageConfig::default());
        b.apply(&Instruction::Healthcheck(Healthcheck::Cmd {
            test: s(&["CMD-SHELL", "true"]),
            interval: Some(5),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: Some(2),
        }))
        .expect("applies");
        let json = serde_json::to_value(&b.config).expect("json");
        assert_eq!(
            json["Healthcheck"],
            serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 5, "Retries": 2})
        );
        b.apply(&Instruction::Healthcheck(Healthcheck::None))
            .expect("none");
        assert_eq!(b.config.healthcheck.map(|h| h.test), Some(s(&["NONE"])));
    }

    #[test]
    fn ports_and_signals() {
        assert_eq!(parse_port_spec("8080"), Ok(s(&["8080/tcp"])));
        assert_eq!(parse_port_spec("1-2/sctp"), Ok(s(&["1/sctp", "2/sctp"])));
        assert_eq!(parse_port_spec("80/foo"), Err("invalid proto: foo".into()));
        assert_eq!(
            parse_port_spec("abc"),
            Err("invalid containerPort: abc".into())
        );
        assert_eq!(
            parse_port_spec("70000"),
            Err("invalid containerPort: 70000".into())
        );
        assert_eq!(
            parse_port_spec("9-3"),
            Err("invalid range specified for container port: 9-3".into())
        );
        for ok in ["SIGKILL", "kill", "9", "SIGRTMIN+3", "RTMAX-1", "sigwinch"] {
            assert_eq!(validate_signal(ok), Ok(()), "{ok}");
        }
        for bad in ["SIGFOO", "0", "65", "RTMIN+99", ""] {
            assert_eq!(
                validate_signal(bad),
                Err(format!("Invalid signal: {bad}")),
                "{bad}"
            );
        }
    }

    #[test]
    fn triggers() {
        let cfg = ImageConfig {
            on_build: s(&["RUN echo hi", "COPY . /src", "ENV A=1"]),
            ..ImageConfig::default()
        };
        let cmds = onbuild_triggers(&cfg, 7).expect("parses");
        assert_eq!(cmds.len(), 3);
        assert!(cmds.iter().all(|c| c.line == 7));
        assert_eq!(cmds[2].instruction, Instruction::Env(vec![kv("A", "1")]));
        let bad = ImageConfig {
            on_build: s(&["FROM x"]),
            ..ImageConfig::default()
        };
        assert_eq!(
            onbuild_triggers(&bad, 3)
                .expect_err("FROM trigger")
                .to_string(),
            "dockerfile parse error line 3: FROM isn't allowed as an ONBUILD trigger"
        );
        let bad = ImageConfig {
            on_build: s(&["XYZZY x"]),
            ..ImageConfig::default()
        };
        assert_eq!(
            onbuild_triggers(&bad, 3).expect_err("unknown").message,
            "unknown instruction: XYZZY"
        );
    }

    #[test]
    fn merged_into_keeps_unmodeled_fields() {
        let base = serde_json::json!({
            "Hostname": "",
            "ArgsEscaped": true,
            "Env": ["PATH=/bin"],
            "Cmd": ["sh"],
            "Labels": {"old": "1"}
        });
        let mut cfg: ImageConfig = serde_json::from_value(base.clone()).expect("reads");
        let mut b = ConfigBuilder::new(cfg.clone());
        b.apply(&Instruction::Entrypoint(exec(&["/app"])))
            .expect("applies");
        cfg = b.config;
        let merged = cfg.merged_into(&base);
        assert_eq!(merged["ArgsEscaped"], true);
        assert_eq!(merged["Hostname"], "");
        assert_eq!(merged["Entrypoint"], serde_json::json!(["/app"]));
        assert!(merged.get("Cmd").is_none(), "the inherited CMD was reset");
        assert_eq!(merged["Labels"]["old"], "1");
        let mut names: Vec<String> = serde_json::to_value(ImageConfig {
            user: "u".into(),
            exposed_ports: [("1/tcp".to_string(), Empty {})].into(),
            env: s(&["A=1"]),
            entrypoint: Some(s(&["e"])),
            cmd: Some(s(&["c"])),
            healthcheck: Some(HealthConfig::default()),
            volumes: [("/v".to_string(), Empty {})].into(),
            working_dir: "/w".into(),
            labels: [("l".to_string(), "v".to_string())].into(),
            stop_signal: "SIGTERM".into(),
            shell: Some(s(&["sh"])),
            on_build: s(&["RUN x"]),
        })
        .expect("json")
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
        names.sort();
        let mut fields: Vec<String> = ImageConfig::FIELDS.iter().map(|f| f.to_string()).collect();
        fields.sort();
        assert_eq!(names, fields, "FIELDS lists every serialized field");
    }

    #[test]
    fn deserializes_docker_config() {
        let cfg: ImageConfig = serde_json::from_str(
            r#"{"Env":["PATH=/x"],"Cmd":["sh"],"OnBuild":["RUN a"],"ArgsEscaped":true,"Labels":null,"Volumes":null}"#,
        )
        .expect("parses");
        assert_eq!(cfg.env_value("PATH"), Some("/x"));
        assert_eq!(cfg.on_build, s(&["RUN a"]));
    }
}
