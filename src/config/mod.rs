//! Configuration: the data directory, `data/.env`, `data/global/botpress.config.json` and the
//! module configuration files merged as Botpress §6 does (schema defaults < global file <
//! `BP_<MODULE>_<KEY>` < per-bot file).

pub mod access;
pub mod dotenv;
pub mod schemas;
pub mod units;

use crate::engine::Problem;
use crate::store::atomic_write;
use dotenv::Env;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// HTTP worker threads per CPU core when `httpServer.workers` is `0`.
pub const WORKERS_PER_CORE: usize = 8;

/// Everything botd reads from `data/global` and the environment at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub env: Env,
    pub http: HttpSettings,
    pub dialog: DialogSettings,
    pub converse: ConverseSettings,
    pub app_secret: String,
    pub jwt_duration: Duration,
    /// The global module files (`data/global/config/<module>.json`), already validated.
    global_modules: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    pub body_limit: u64,
    pub external_url: String,
    pub workers: usize,
    /// Connection limits and timeouts (`httpServer.maxConnections`, `headTimeout`,
    /// `bodyTimeout`, `keepAliveTimeout`).
    pub limits: crate::http::Limits,
    /// `httpServer.trustedProxies`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<access::Network>,
    /// `httpServer.allowedOrigins`: `None` answers any origin with `*`.
    pub allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DialogSettings {
    pub janitor_interval: Duration,
    pub timeout_interval: Duration,
    pub session_timeout_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ConverseSettings {
    pub timeout: Duration,
    pub max_message_length: usize,
    pub enable_unsecured_endpoint: bool,
    /// `converse.rateLimit` and `converse.apiKeys`, for bots that set none of their own.
    pub access: access::ConverseAccess,
}

/// The defaults written to a new `botpress.config.json` (without the secret).
fn default_global_config() -> Value {
    json!({
        "$schema": "../botpress.config.schema.json",
        "httpServer": {"host": "localhost", "port": 3000, "bodyLimit": "100kb", "externalUrl": "", "workers": 0},
        "dialog": {"janitorInterval": "10s", "timeoutInterval": "2m", "sessionTimeoutInterval": "30m"},
        "converse": {"timeout": "5s", "maxMessageLength": 360, "enableUnsecuredEndpoint": true},
        "jwtToken": {"duration": "6h"},
        "version": "11.8.1"
    })
}

impl Settings {
    /// Reads the configuration of `data_dir`, creating on first start the files that are
    /// missing (never overwriting one). Problems name the file and key.
    pub fn load(data_dir: &Path) -> Result<Settings, Vec<Problem>> {
        let env = Env::load(&data_dir.join(".env")).map_err(|e| vec![Problem::new(".env", e)])?;
        Settings::load_with_env(data_dir, env)
    }

    pub fn load_with_env(data_dir: &Path, env: Env) -> Result<Settings, Vec<Problem>> {
        let global_dir = data_dir.join("global");
        let config_path = global_dir.join("botpress.config.json");
        let shown = config_path.display().to_string();
        let mut config = if config_path.exists() {
            read_json(&config_path).map_err(|e| vec![e])?
        } else {
            default_global_config()
        };
        if !config.is_object() {
            return Err(vec![Problem::new(&shown, "must be a JSON object")]);
        }
        let missing_secret = config
            .get("appSecret")
            .or_else(|| config.get("jwtSecret"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if missing_secret || !config_path.exists() {
            if missing_secret {
                let secret = random_secret(40).map_err(|e| vec![Problem::new(&shown, e)])?;
                config["appSecret"] = Value::String(secret);
            }
            write_json(&config_path, &config).map_err(|e| vec![Problem::new(&shown, e)])?;
        }
        keep_private(&config_path);

        let mut problems = Vec::new();
        let mut global_modules = Map::new();
        for module in schemas::MODULES {
            let path = global_dir.join("config").join(format!("{module}.json"));
            if !path.exists() {
                let mut file = Map::new();
                file.insert(
                    "$schema".into(),
                    Value::String(format!(
                        "../../../assets/modules/{module}/config.schema.json"
                    )),
                );
                file.extend(schemas::defaults(module));
                if let Err(e) = write_json(&path, &Value::Object(file)) {
                    problems.push(Problem::new(path.display().to_string(), e));
                }
            }
            keep_private(&path);
            match read_json(&path) {
                Ok(Value::Object(map)) => {
                    problems.extend(validate_module(module, &map, &path.display().to_string()));
                    global_modules.insert(module.to_string(), Value::Object(map));
                }
                Ok(_) => problems.push(Problem::new(
                    path.display().to_string(),
                    "must be a JSON object",
                )),
                Err(p) => problems.push(p),
            }
        }

        let get = |path: &[&str]| -> Option<&Value> {
            let mut v = &config;
            for key in path {
                v = v.get(*key)?;
            }
            Some(v)
        };
        let mut text = |path: &[&str], default: &str| -> String {
            match get(path) {
                None | Some(Value::Null) => default.to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    problems.push(Problem::new(
                        &shown,
                        format!("{} must be a string", path.join(".")),
                    ));
                    default.to_string()
                }
            }
        };
        let host = text(&["httpServer", "host"], "localhost");
        let body_limit = text(&["httpServer", "bodyLimit"], "100kb");
        let external_url = text(&["httpServer", "externalUrl"], "");
        let head_timeout = text(&["httpServer", "headTimeout"], "10s");
        let body_timeout = text(&["httpServer", "bodyTimeout"], "30s");
        let keep_alive_timeout = text(&["httpServer", "keepAliveTimeout"], "60s");
        let janitor = text(&["dialog", "janitorInterval"], "10s");
        let timeout = text(&["dialog", "timeoutInterval"], "2m");
        let session_timeout = text(&["dialog", "sessionTimeoutInterval"], "30m");
        let converse_timeout = text(&["converse", "timeout"], "5s");
        let jwt_duration = text(&["jwtToken", "duration"], "6h");
        let app_secret = text(&["appSecret"], "");
        let app_secret = if app_secret.is_empty() {
            text(&["jwtSecret"], "")
        } else {
            app_secret
        };

        let mut number = |path: &[&str], default: u64| -> u64 {
            match get(path) {
                None | Some(Value::Null) => default,
                Some(v) => v.as_u64().unwrap_or_else(|| {
                    problems.push(Problem::new(
                        &shown,
                        format!("{} must be a whole number", path.join(".")),
                    ));
                    default
                }),
            }
        };
        let port = number(&["httpServer", "port"], 3000);
        let workers = number(&["httpServer", "workers"], 0);
        let max_connections = number(&["httpServer", "maxConnections"], 1024);
        let max_len = number(&["converse", "maxMessageLength"], 360);
        let unsecured = match get(&["converse", "enableUnsecuredEndpoint"]) {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                problems.push(Problem::new(
                    &shown,
                    "converse.enableUnsecuredEndpoint must be true or false",
                ));
                true
            }
        };

        let mut duration = |value: &str, key: &str| -> Duration {
            units::parse_duration(value).unwrap_or_else(|e| {
                problems.push(Problem::new(&shown, format!("{key}: {e}")));
                Duration::from_secs(1)
            })
        };
        let dialog = DialogSettings {
            janitor_interval: duration(&janitor, "dialog.janitorInterval"),
            timeout_interval: duration(&timeout, "dialog.timeoutInterval"),
            session_timeout_interval: duration(&session_timeout, "dialog.sessionTimeoutInterval"),
        };
        let converse_timeout = duration(&converse_timeout, "converse.timeout");
        let limits = crate::http::Limits {
            head_timeout: duration(&head_timeout, "httpServer.headTimeout"),
            body_timeout: duration(&body_timeout, "httpServer.bodyTimeout"),
            idle_timeout: duration(&keep_alive_timeout, "httpServer.keepAliveTimeout"),
            max_connections: (max_connections as usize).max(1),
            ..crate::http::Limits::default()
        };
        let jwt_duration = duration(&jwt_duration, "jwtToken.duration");
        let body_limit = units::parse_size(&body_limit).unwrap_or_else(|e| {
            problems.push(Problem::new(&shown, format!("httpServer.bodyLimit: {e}")));
            100 * 1024
        });

        let host = env.get("BP_HOST").map(str::to_string).unwrap_or(host);
        let port = match env.get("PORT") {
            Some(p) => p.parse::<u16>().unwrap_or_else(|_| {
                problems.push(Problem::new(
                    "PORT",
                    format!("\"{p}\" is not a port number"),
                ));
                3000
            }),
            None => u16::try_from(port).unwrap_or_else(|_| {
                problems.push(Problem::new(&shown, "httpServer.port must be 0 to 65535"));
                3000
            }),
        };
        let external_url = env
            .get("EXTERNAL_URL")
            .map(str::to_string)
            .or(Some(external_url).filter(|u| !u.is_empty()))
            .unwrap_or_else(|| format!("http://{host}:{port}"));
        let trusted_proxies = access::read_proxies(
            get(&["httpServer", "trustedProxies"]),
            &shown,
            &mut problems,
        );
        let allowed_origins = access::read_origins(
            get(&["httpServer", "allowedOrigins"]),
            &shown,
            &mut problems,
        );
        let converse_access =
            access::ConverseAccess::read(get(&["converse"]), &shown, &mut problems);
        // Handlers mostly wait (a commit's fsync, a database round trip, an action's HTTP
        // call), and handlers waiting together share one commit: more workers than cores.
        let workers = if workers == 0 {
            WORKERS_PER_CORE * std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers as usize
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Settings {
            data_dir: data_dir.to_path_buf(),
            env,
            http: HttpSettings {
                host,
                port,
                body_limit,
                external_url: external_url.trim_end_matches('/').to_string(),
                workers,
                limits,
                trusted_proxies,
                allowed_origins,
            },
            dialog,
            converse: ConverseSettings {
                timeout: converse_timeout,
                max_message_length: max_len as usize,
                enable_unsecured_endpoint: unsecured,
                access: converse_access,
            },
            app_secret,
            jwt_duration,
            global_modules,
        })
    }

    /// The merged configuration of `module` for one bot (§6): schema defaults < global file <
    /// `BP_<MODULE>_<KEY>` < `data/bots/<bot>/config/<module>.json`. Problems name file and key.
    pub fn module_config(
        &self,
        module: &str,
        bot_dir: Option<&Path>,
    ) -> (Map<String, Value>, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut merged = schemas::defaults(module);
        if let Some(Value::Object(global)) = self.global_modules.get(module) {
            merged.extend(global.clone());
        }
        merged.extend(env_overrides(module, &self.env, &mut problems));
        if let Some(dir) = bot_dir {
            let path = dir.join("config").join(format!("{module}.json"));
            if path.exists() {
                match read_json(&path) {
                    Ok(Value::Object(map)) => {
                        problems.extend(validate_module(module, &map, &path.display().to_string()));
                        merged.extend(map);
                    }
                    Ok(_) => problems.push(Problem::new(
                        path.display().to_string(),
                        "must be a JSON object",
                    )),
                    Err(p) => problems.push(p),
                }
            }
        }
        merged.remove("$schema");
        (merged, problems)
    }
}

/// `BP_<MODULE>_<KEY>` variables for the keys of `module`'s schema, coerced to the schema's
/// type. Both `BP_CHANNEL-MESSENGER_APPSECRET` and `BP_CHANNEL_MESSENGER_APPSECRET` work.
fn env_overrides(module: &str, env: &Env, problems: &mut Vec<Problem>) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(schema) = schemas::schema(module) else {
        return out;
    };
    let Some(props) = schema["properties"].as_object() else {
        return out;
    };
    let upper = module.to_ascii_uppercase();
    for (key, prop) in props {
        if key == "$schema" {
            continue;
        }
        let key_upper = key.to_ascii_uppercase();
        let names = [
            format!("BP_{upper}_{key_upper}"),
            format!("BP_{}_{key_upper}", upper.replace('-', "_")),
        ];
        let Some((name, raw)) = names.iter().find_map(|n| env.get(n).map(|v| (n, v))) else {
            continue;
        };
        match coerce(raw, prop["type"].as_str().unwrap_or("string")) {
            Ok(v) => {
                out.insert(key.clone(), v);
            }
            Err(e) => problems.push(Problem::new(name.as_str(), e)),
        }
    }
    out
}

fn coerce(raw: &str, kind: &str) -> Result<Value, String> {
    match kind {
        "boolean" => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("\"{raw}\" is not true or false")),
        },
        "number" => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("\"{raw}\" is not a number")),
        "array" | "object" => serde_json::from_str::<Value>(raw)
            .ok()
            .filter(|v| (kind == "array" && v.is_array()) || (kind == "object" && v.is_object()))
            .ok_or_else(|| format!("expected a JSON {kind}")),
        _ => Ok(Value::String(raw.to_string())),
    }
}

/// Checks a module file against its schema: unknown keys and wrong types, by file and key.
pub fn validate_module(module: &str, file: &Map<String, Value>, shown: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(schema) = schemas::schema(module) else {
        return problems;
    };
    let props = &schema["properties"];
    for (key, value) in file {
        let Some(prop) = props.get(key) else {
            problems.push(Problem::new(
                shown,
                format!("unknown key \"{key}\" for module {module}"),
            ));
            continue;
        };
        // A schema type is one name or a list of them (JSON Schema's `"type": [..]`).
        let kinds: Vec<&str> = match &prop["type"] {
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            other => vec![other.as_str().unwrap_or("string")],
        };
        let kind = kinds.join(" or ");
        let ok = kinds.iter().any(|kind| match *kind {
            "boolean" => value.is_boolean(),
            "number" => value.is_number(),
            "array" => value.is_array() || value.is_null(),
            "object" => value.is_object(),
            _ => value.is_string(),
        });
        if !ok {
            problems.push(Problem::new(
                shown,
                format!(
                    "\"{key}\" must be of type {kind}, found {}",
                    type_name(value)
                ),
            ));
            continue;
        }
        let format_error = match (prop["format"].as_str(), value.as_str()) {
            (Some("duration"), Some(s)) => units::parse_duration(s).err(),
            (Some("size"), Some(s)) => units::parse_size(s).err(),
            _ => None,
        };
        if let Some(e) = format_error {
            problems.push(Problem::new(shown, format!("\"{key}\": {e}")));
        }
    }
    problems
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Reads a JSON file; the problem names the file and, for syntax errors, line and column.
pub fn read_json(path: &Path) -> Result<Value, Problem> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Problem::new(&shown, e.to_string()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    serde_json::from_str(text).map_err(|e| Problem::new(&shown, format!("invalid JSON: {e}")))
}

/// Global config files hold the appSecret and channel secrets: ones an older release made
/// world-readable become 0600. A file botd may not chmod (someone else's) is left as its owner
/// chose; reading it still works.
fn keep_private(path: &Path) {
    let _ = crate::store::restrict_mode(path, 0o600);
}

/// Writes `value` (created 0600, in folders created 0700: see [`atomic_write`]).
fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    text.push(b'\n');
    atomic_write(path, &text).map_err(|e| e.to_string())
}

/// A secret of `len` characters from the OS's random source (URL-safe alphabet, like nanoid).
pub fn random_secret(len: usize) -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let bytes = os_random_bytes(len)?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[(*b & 63) as usize] as char)
        .collect())
}

/// `len` bytes from `/dev/urandom`; botd makes no secret from anything weaker.
pub fn os_random_bytes(len: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read the OS random source /dev/urandom: {e}"))?;
    Ok(buf)
}
