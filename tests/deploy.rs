//! `deploy/`: the systemd units, the Dockerfile, the compose file and the collector config
//! parse, run real samocode commands, name only files that exist, and send traces to Jaeger.
//! Docker itself is not needed: the files are read, and the commands they name are checked
//! against the built binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_samocode");

fn path(relative: &str) -> PathBuf {
    Path::new(ROOT).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Asserts that `argv` runs samocode with a command and flags it accepts: the binary's own
/// `--help` for exactly those arguments must succeed.
fn assert_samocode_command(argv: &[String], origin: &str) {
    let program = argv
        .first()
        .unwrap_or_else(|| panic!("{origin}: no command"));
    assert_eq!(
        Path::new(program).file_name().and_then(|n| n.to_str()),
        Some("samocode"),
        "{origin}: {program} is not samocode"
    );
    let args = &argv[1..];
    let subcommand = args
        .first()
        .unwrap_or_else(|| panic!("{origin}: samocode without a command"));
    let help = Command::new(BIN).args(args).arg("--help").output().unwrap();
    let stdout = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success() && stdout.contains(&format!("Usage: samocode {subcommand}")),
        "{origin}: `samocode {}` is not a samocode command: {}{}",
        args.join(" "),
        stdout,
        String::from_utf8_lossy(&help.stderr)
    );
}

// --- systemd units -----------------------------------------------------------------------

/// The keys each section may hold: the ones the units use and their close relatives. A key
/// outside these (a typo such as `Restart=on-faillure` is a value, but `Restrat=` a key) is
/// refused, as systemd would ignore it with only a warning in the journal.
const UNIT_KEYS: &[&str] = &[
    "Description",
    "Documentation",
    "Wants",
    "Requires",
    "After",
    "Before",
    "StartLimitIntervalSec",
    "StartLimitBurst",
];
const SERVICE_KEYS: &[&str] = &[
    "Type",
    "User",
    "Group",
    "ExecStart",
    "ExecReload",
    "WorkingDirectory",
    "Environment",
    "EnvironmentFile",
    "StateDirectory",
    "StateDirectoryMode",
    "LogsDirectory",
    "Restart",
    "RestartSec",
    "RestartPreventExitStatus",
    "KillMode",
    "KillSignal",
    "TimeoutStopSec",
    "UMask",
    "NoNewPrivileges",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "ProtectSystem",
    "ProtectHome",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectClock",
    "ProtectControlGroups",
    "ProtectHostname",
    "ProtectProc",
    "RestrictSUIDSGID",
    "LockPersonality",
    "RestrictRealtime",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "MemoryDenyWriteExecute",
];
const INSTALL_KEYS: &[&str] = &["WantedBy", "RequiredBy", "Alias"];

/// A unit file: its sections, each with its `Key=value` lines in order (keys may repeat).
struct Unit(HashMap<String, Vec<(String, String)>>);

impl Unit {
    fn parse(text: &str) -> Result<Unit, String> {
        let mut sections: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut current: Option<String> = None;
        let mut joined = String::new();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = raw.trim();
            if joined.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
                continue;
            }
            // A trailing backslash continues the line.
            if let Some(start) = line.strip_suffix('\\') {
                joined.push_str(start);
                joined.push(' ');
                continue;
            }
            joined.push_str(line);
            let line = std::mem::take(&mut joined);
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if !["Unit", "Service", "Install"].contains(&name) {
                    return Err(format!("line {number}: unknown section [{name}]"));
                }
                sections.entry(name.to_string()).or_default();
                current = Some(name.to_string());
                continue;
            }
            let Some(section) = &current else {
                return Err(format!("line {number}: {line:?} is outside any section"));
            };
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {number}: {line:?} is not Key=value"));
            };
            let key = key.trim();
            let known = match section.as_str() {
                "Unit" => UNIT_KEYS,
                "Service" => SERVICE_KEYS,
                _ => INSTALL_KEYS,
            };
            if !known.contains(&key) {
                return Err(format!("line {number}: unknown key {key} in [{section}]"));
            }
            sections
                .get_mut(section)
                .unwrap()
                .push((key.to_string(), value.trim().to_string()));
        }
        for required in ["Unit", "Service", "Install"] {
            if !sections.contains_key(required) {
                return Err(format!("no [{required}] section"));
            }
        }
        Ok(Unit(sections))
    }

    /// Every value of `key` in `section`, in order.
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.0[section]
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The effective value of `key` (the last one), if set.
    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).pop()
    }

    /// `Environment=` assignments, by name.
    fn environment(&self) -> HashMap<&str, &str> {
        self.all("Service", "Environment")
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(|assignment| assignment.split_once('='))
            .collect()
    }
}

const UNITS: [&str; 2] = [
    "deploy/systemd/user/samocode.service",
    "deploy/systemd/system/samocode.service",
];

#[test]
fn systemd_units_run_the_daemon_with_its_state_secrets_restart_and_hardening() {
    for file in UNITS {
        let unit = Unit::parse(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let exec = unit.get("Service", "ExecStart").expect("ExecStart");
        let argv: Vec<String> = exec.split_whitespace().map(String::from).collect();
        assert_eq!(argv[1], "supervise", "{file}: runs the daemon");
        assert_samocode_command(&argv, file);

        let service = |key| unit.get("Service", key);
        assert_eq!(service("Restart"), Some("on-failure"), "{file}");
        // The daemon's state lives where systemd creates it, and samocode is told so.
        let state = service("StateDirectory").expect("StateDirectory");
        assert_eq!(
            unit.environment().get("SAMOCODE_STATE_DIR"),
            Some(&format!("%S/{state}").as_str()),
            "{file}: SAMOCODE_STATE_DIR is the StateDirectory"
        );
        assert_eq!(service("StateDirectoryMode"), Some("0700"), "{file}");
        assert!(service("EnvironmentFile").is_some(), "{file}: secrets file");
        // SIGTERM to the daemon alone, with time for the agents' grace period.
        assert_eq!(service("KillMode"), Some("mixed"), "{file}");
        let stop = service("TimeoutStopSec").expect("TimeoutStopSec");
        let stop = humantime::parse_duration(stop).unwrap();
        // The daemon's own stop: the agents' grace (10 s by default), a remote attempt's wait
        // for its end (30 s), then the notices (a send under way is let end).
        let daemon =
            std::time::Duration::from_secs(10 + 30) + samocode::supervisor::NOTICES_AT_STOP;
        assert!(
            stop > daemon,
            "{file}: longer than the daemon's own stop ({daemon:?})"
        );
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("RestrictSUIDSGID", "yes"),
            ("LockPersonality", "yes"),
        ] {
            assert_eq!(service(key), Some(value), "{file}: {key}");
        }
        // What the agents' work needs stays allowed: Node.js's JIT, namespaces for sandboxes.
        assert_ne!(service("MemoryDenyWriteExecute"), Some("yes"), "{file}");
        assert_eq!(service("RestrictNamespaces"), None, "{file}");
        assert!(unit.get("Install", "WantedBy").is_some(), "{file}");
    }

    // A user manager's PATH lacks the user's own bin folders, where the agent CLIs are.
    let user = Unit::parse(&read(UNITS[0])).unwrap();
    let path = user.environment().get("PATH").copied().unwrap_or_default();
    // It replaces the manager's PATH: the system's default folders stay in it.
    for folder in [
        "%h/.local/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        assert!(
            path.split(':').any(|p| p == folder),
            "user unit: {folder} not in {path:?}"
        );
    }

    let system = Unit::parse(&read(UNITS[1])).unwrap();
    let service = |key| system.get("Service", key);
    assert_eq!(service("User"), Some("samocode"));
    assert_eq!(service("ProtectSystem"), Some("strict"));
    assert!(
        service("ReadWritePaths").is_some_and(|p| !p.is_empty()),
        "the work area stays writable under ProtectSystem=strict"
    );
    for key in [
        "PrivateTmp",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
    ] {
        assert_eq!(service(key), Some("yes"), "system unit: {key}");
    }
}

#[test]
fn the_unit_parser_refuses_unknown_keys_stray_lines_and_missing_sections() {
    let good = "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/samocode \\\n  supervise\n[Install]\nWantedBy=default.target\n";
    let unit = Unit::parse(good).unwrap();
    assert_eq!(
        unit.get("Service", "ExecStart"),
        Some("/bin/samocode  supervise")
    );
    for (text, error) in [
        (
            good.replace("ExecStart", "ExecStrat"),
            "unknown key ExecStrat",
        ),
        (good.replace("[Install]", "[Instal]"), "unknown section"),
        (
            good.replace("Description=x", "Description x"),
            "not Key=value",
        ),
        (format!("Description=x\n{good}"), "outside any section"),
        (
            good.replace("[Install]\nWantedBy=default.target\n", ""),
            "no [Install]",
        ),
    ] {
        let refused = Unit::parse(&text).err().unwrap_or_default();
        assert!(refused.contains(error), "{error}: got {refused:?}");
    }
}

#[test]
fn the_environment_file_example_names_only_documented_variables() {
    let example = read("deploy/samocode.env.example");
    let documented = read("README.md") + &read("deploy/README.md");
    let mut names = Vec::new();
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            names.push(name.to_string());
        }
    }
    assert!(
        names.contains(&"TELEGRAM_BOT_TOKEN".to_string()),
        "{names:?}"
    );
    for name in names {
        assert!(
            documented.contains(&format!("`{name}`")) || documented.contains(&format!("{name},")),
            "{name} in deploy/samocode.env.example is explained neither in README.md nor in deploy/README.md"
        );
    }
}

// --- Dockerfile --------------------------------------------------------------------------

/// One instruction: its keyword (upper case), its arguments, the line it starts on.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

const DOCKER_KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "VOLUME",
    "ENTRYPOINT",
    "CMD",
    "EXPOSE",
    "LABEL",
    "HEALTHCHECK",
    "STOPSIGNAL",
    "SHELL",
];

fn parse_dockerfile(text: &str) -> Result<Vec<Instruction>, String> {
    let mut instructions = Vec::new();
    let mut joined = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        // Comments (parser directives included) and blank lines, also inside a continuation.
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if joined.is_empty() {
            start = index + 1;
        }
        if let Some(part) = line.strip_suffix('\\') {
            joined.push_str(part);
            joined.push(' ');
            continue;
        }
        joined.push_str(line);
        let whole = std::mem::take(&mut joined);
        let (keyword, args) = whole
            .split_once(char::is_whitespace)
            .unwrap_or((&whole, ""));
        let keyword = keyword.to_ascii_uppercase();
        if !DOCKER_KEYWORDS.contains(&keyword.as_str()) {
            return Err(format!("line {start}: unknown instruction {keyword}"));
        }
        instructions.push(Instruction {
            keyword,
            args: args.trim().to_string(),
            line: start,
        });
    }
    if !joined.is_empty() {
        return Err("the file ends inside a continued line".into());
    }
    match instructions.iter().find(|i| i.keyword != "ARG") {
        Some(first) if first.keyword == "FROM" => Ok(instructions),
        _ => Err("the first instruction (after ARG) is not FROM".into()),
    }
}

/// A stage: its base image, its name, its instructions after FROM.
struct Stage<'a> {
    image: &'a str,
    name: Option<&'a str>,
    steps: Vec<&'a Instruction>,
}

fn stages(instructions: &[Instruction]) -> Vec<Stage<'_>> {
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(*name),
                _ => None,
            };
            stages.push(Stage {
                image: words[0],
                name,
                steps: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.steps.push(instruction);
        }
    }
    stages
}

/// The flags (`--from=x`) and the words of a COPY; the last word is the destination.
fn copy_parts(args: &str) -> (HashMap<&str, &str>, Vec<&str>) {
    let mut flags = HashMap::new();
    let mut words = Vec::new();
    for word in args.split_whitespace() {
        match word.strip_prefix("--") {
            Some(flag) => {
                let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
                flags.insert(name, value);
            }
            None => words.push(word),
        }
    }
    (flags, words)
}

/// An exec-form (JSON array) ENTRYPOINT or CMD.
fn exec_form(instruction: &Instruction) -> Vec<String> {
    serde_json::from_str(&instruction.args).unwrap_or_else(|e| {
        panic!(
            "line {}: {} is not in exec form (a JSON array): {e}",
            instruction.line, instruction.keyword
        )
    })
}

#[test]
fn the_dockerfile_builds_from_repository_files_and_runs_the_daemon_as_a_user() {
    let instructions =
        parse_dockerfile(&read("deploy/Dockerfile")).unwrap_or_else(|e| panic!("Dockerfile: {e}"));
    let stages = stages(&instructions);
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let ignore = read("deploy/Dockerfile.dockerignore");
    let sent: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();

    // The build stage: the pinned toolchain, a locked release build.
    let build = &stages[0];
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let rust_version = manifest["package"]["rust-version"].as_str().unwrap();
    assert!(
        build.image.starts_with(&format!("rust:{rust_version}")),
        "the build stage uses Rust {rust_version}: {}",
        build.image
    );
    assert!(
        build
            .steps
            .iter()
            .any(|s| s.keyword == "RUN" && s.args.contains("cargo build --release --locked")),
        "a locked release build"
    );

    // Every file copied from the build context exists and is sent by the .dockerignore.
    let mut names: Vec<&str> = Vec::new();
    for (index, stage) in stages.iter().enumerate() {
        for step in stage.steps.iter().filter(|s| s.keyword == "COPY") {
            let (flags, words) = copy_parts(&step.args);
            let (sources, _destination) = words.split_at(words.len() - 1);
            match flags.get("from") {
                Some(from) => assert!(
                    names.contains(from),
                    "line {}: --from={from} is not an earlier stage",
                    step.line
                ),
                None => {
                    for source in sources {
                        let source = source.trim_start_matches("./").trim_end_matches('/');
                        assert!(
                            path(source).exists(),
                            "line {}: COPY {source}: no such file in the repository",
                            step.line
                        );
                        assert!(
                            sent.contains(&source),
                            "line {}: {source} is left out of the build context by deploy/Dockerfile.dockerignore",
                            step.line
                        );
                    }
                }
            }
        }
        names.extend(stage.name);
        assert!(
            stage.name.is_some() || index == stages.len() - 1,
            "stage {index} has a name"
        );
    }

    // The agent CLIs come from the pinned lockfile, into the runtime.
    let agents = stages
        .iter()
        .find(|s| {
            s.steps
                .iter()
                .any(|i| i.keyword == "COPY" && i.args.contains("tests/agents/package-lock.json"))
                && s.steps
                    .iter()
                    .any(|i| i.keyword == "RUN" && i.args.contains("npm ci"))
        })
        .expect("a stage installs the agents with npm ci from tests/agents/package-lock.json");
    let runtime = stages.last().unwrap();
    assert!(runtime.image.contains("bookworm-slim"), "{}", runtime.image);
    let copies_from = |stage: &str| {
        runtime
            .steps
            .iter()
            .any(|s| s.keyword == "COPY" && copy_parts(&s.args).0.get("from") == Some(&stage))
    };
    assert!(
        copies_from(agents.name.unwrap()),
        "the agents reach the runtime"
    );
    assert!(
        copies_from(build.name.unwrap()),
        "the binary reaches the runtime"
    );
    let installs = runtime
        .steps
        .iter()
        .filter(|s| s.keyword == "RUN")
        .map(|s| s.args.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(installs.contains(" git"), "git is installed in the runtime");

    // A non-root user, the state, sessions and worktrees as volumes.
    let user = runtime
        .steps
        .iter()
        .rfind(|s| s.keyword == "USER")
        .expect("USER in the runtime stage");
    assert!(!["root", "0"].contains(&user.args.split(':').next().unwrap()));
    let state_dir = runtime
        .steps
        .iter()
        .filter(|s| s.keyword == "ENV")
        .flat_map(|s| s.args.split_whitespace())
        .find_map(|a| a.strip_prefix("SAMOCODE_STATE_DIR="))
        .expect("ENV SAMOCODE_STATE_DIR");
    let volumes: Vec<String> = runtime
        .steps
        .iter()
        .filter(|s| s.keyword == "VOLUME")
        .flat_map(|s| exec_form(s))
        .collect();
    assert!(volumes.iter().any(|v| v == state_dir), "{volumes:?}");
    for kind in ["sessions", "worktrees"] {
        assert!(
            volumes.iter().any(|v| v.ends_with(kind)),
            "{kind}: {volumes:?}"
        );
    }

    // ENTRYPOINT and CMD together run `samocode supervise`.
    let last = |keyword: &str| runtime.steps.iter().rfind(|s| s.keyword == keyword);
    let mut argv: Vec<String> = last("ENTRYPOINT").map(|i| exec_form(i)).unwrap_or_default();
    argv.extend(last("CMD").map(|i| exec_form(i)).unwrap_or_default());
    let at = argv
        .iter()
        .position(|a| Path::new(a).file_name().is_some_and(|n| n == "samocode"))
        .unwrap_or_else(|| panic!("the container runs samocode: {argv:?}"));
    assert_eq!(argv.get(at + 1).map(String::as_str), Some("supervise"));
    assert_samocode_command(&argv[at..], "deploy/Dockerfile");
}

#[test]
fn the_dockerfile_parser_refuses_unknown_instructions_and_a_missing_from() {
    assert!(parse_dockerfile("FROM x\nRUN a \\\n  b\nCMD [\"y\"]\n").is_ok());
    for (text, error) in [
        ("FROM x\nRUNN a\n", "unknown instruction RUNN"),
        ("RUN a\nFROM x\n", "not FROM"),
        ("FROM x\nRUN a \\\n", "continued line"),
    ] {
        let refused = parse_dockerfile(text).err().unwrap_or_default();
        assert!(refused.contains(error), "{error}: got {refused:?}");
    }
}

// --- compose and the collector -----------------------------------------------------------

fn yaml(relative: &str) -> Value {
    serde_yaml_ng::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// `host:port` of an endpoint written as a URL or as `host:port`.
fn host_port(endpoint: &str) -> (String, u16) {
    let rest = endpoint.split("://").last().unwrap().trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{endpoint}: no port"));
    (
        host.to_string(),
        port.parse()
            .unwrap_or_else(|_| panic!("{endpoint}: bad port")),
    )
}

#[test]
fn compose_runs_samocode_the_collector_and_jaeger_from_files_that_exist() {
    let compose = yaml("deploy/compose.yaml");
    let services = compose["services"].as_object().expect("services");
    let deploy = path("deploy");

    // samocode: built from this repository's Dockerfile, its volumes declared or present.
    let samocode = &services["samocode"];
    let context = deploy.join(samocode["build"]["context"].as_str().unwrap());
    let dockerfile = context.join(samocode["build"]["dockerfile"].as_str().unwrap());
    assert_eq!(
        dockerfile.canonicalize().unwrap(),
        path("deploy/Dockerfile")
    );
    let named: Vec<&String> = compose["volumes"].as_object().unwrap().keys().collect();
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with("${") {
                continue; // a path the user chooses, with a default that may not exist yet
            }
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    deploy.join(source).exists(),
                    "{name}: {source} does not exist"
                );
            } else {
                assert!(
                    named.contains(&&source.to_string()),
                    "{name}: volume {source} undeclared"
                );
            }
        }
    }
    // The secrets file is optional; what to put in it ships beside it.
    let env_file = &samocode["env_file"][0];
    assert_eq!(env_file["required"], false);
    let example = format!("{}.example", env_file["path"].as_str().unwrap());
    assert!(deploy.join(&example).is_file(), "{example}");

    // The collector: its config is this repository's file, mounted where its command reads it.
    let (collector_name, collector) = services
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.contains("opentelemetry-collector"))
        })
        .expect("a collector service");
    let config_path = collector["command"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--config="))
        .expect("--config=PATH");
    let mounted = collector["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().split(':').collect::<Vec<_>>())
        .find(|parts| parts[1] == config_path)
        .expect("the config file is mounted at the path the command reads");
    assert_eq!(
        deploy.join(mounted[0]).canonicalize().unwrap(),
        path("deploy/otel-collector.yaml")
    );

    // samocode sends its spans to the collector's OTLP/HTTP port.
    let endpoint = samocode["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        .as_str()
        .unwrap();
    assert_eq!(host_port(endpoint), (collector_name.clone(), 4318));

    // The collector takes OTLP/HTTP on 4318 and forwards traces to Jaeger's OTLP port.
    let config = yaml("deploy/otel-collector.yaml");
    let http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .unwrap();
    assert_eq!(host_port(http).1, 4318);
    let traces = &config["service"]["pipelines"]["traces"];
    assert!(
        traces["receivers"]
            .as_array()
            .unwrap()
            .contains(&"otlp".into())
    );
    let (jaeger_name, jaeger) = services
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("jaegertracing/"))
        })
        .expect("a Jaeger service");
    let forwards_to_jaeger = traces["exporters"].as_array().unwrap().iter().any(|name| {
        let name = name.as_str().unwrap();
        let Some(endpoint) = config["exporters"][name]["endpoint"].as_str() else {
            return false;
        };
        let (host, port) = host_port(endpoint);
        let jaeger_port = match name.split('/').next().unwrap() {
            "otlp" => 4317,     // OTLP over gRPC
            "otlphttp" => 4318, // OTLP over HTTP
            _ => return false,
        };
        &host == jaeger_name && port == jaeger_port
    });
    assert!(
        forwards_to_jaeger,
        "the traces pipeline exports to {jaeger_name}'s OTLP port"
    );
    // Jaeger's UI is published.
    let ports: Vec<&str> = jaeger["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(ports.iter().any(|p| p.ends_with(":16686")), "{ports:?}");
}

#[test]
fn the_deploy_readme_explains_every_file_and_the_main_readme_points_to_it() {
    let readme = read("deploy/README.md");
    let mut files = Vec::new();
    let mut dirs = vec![path("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap().path();
            if entry.is_dir() {
                dirs.push(entry);
            } else {
                files.push(entry);
            }
        }
    }
    for file in files {
        let relative = file
            .strip_prefix(path("deploy"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if relative == "README.md" {
            continue;
        }
        assert!(
            readme.contains(&relative),
            "deploy/README.md does not mention {relative}"
        );
    }
    assert!(read("README.md").contains("deploy/README.md"));
}
