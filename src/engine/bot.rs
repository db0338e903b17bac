//! Loading a bot folder (`data/bots/<id>/`): `bot.config.json`, flows, content elements,
//! intents, entities, QnA and per-bot module configuration, with every problem reported as
//! `path: what is wrong`.

use super::content::{self, ContentElement};
use super::expr::Condition;
use super::flow::{self, Flow};
use super::nlu::{self, Nlu, NluConfig};
use super::qna::{self, QnaEntry};
use super::{actions, js, Problem};
use crate::config::{units, Settings};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The Botpress release a bot folder was made with: `bot.config.json`'s `version` when it is
/// 12 or later (Botpress 12 writes its own version there); a Botpress 11 folder holds the
/// bot's version there (usually "1.0.0"), read as 11.9.7, the last 11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BotpressVersion(pub u32, pub u32, pub u32);

impl BotpressVersion {
    pub fn from_config(version: Option<&str>) -> BotpressVersion {
        let parsed: Vec<u32> = version
            .unwrap_or("")
            .split('.')
            .map_while(|p| p.parse().ok())
            .collect();
        match parsed[..] {
            [major, minor, patch, ..] if major >= 12 => BotpressVersion(major, minor, patch),
            [major, minor] if major >= 12 => BotpressVersion(major, minor, 0),
            _ => BotpressVersion(11, 9, 7),
        }
    }

    /// A folder whose `version` does not say Botpress 12 may still be one (some exports drop
    /// the key): a `messaging` block is Botpress 12.24 on, a choice skill with a `randomId`
    /// 12.3 on; the earliest release with what the folder holds is taken.
    pub fn or_inferred(
        self,
        config: &Map<String, Value>,
        flows: &HashMap<String, Flow>,
        bot_dir: &Path,
    ) -> Self {
        if self.0 >= 12 {
            return self;
        }
        if config.get("messaging").is_some_and(Value::is_object) {
            return BotpressVersion(12, 24, 0);
        }
        let random_ids = flows.values().any(|f| {
            f.nodes.iter().any(|n| {
                n.on_receive
                    .iter()
                    .flatten()
                    .chain(n.on_enter.iter())
                    .any(|c| c.starts_with("basic-skills/choice_") && c.contains("\"randomId\""))
            })
        });
        if random_ids {
            return BotpressVersion(12, 3, 0);
        }
        if keyed_by_language(bot_dir) {
            return BotpressVersion(12, 0, 0);
        }
        self
    }

    /// Where the slot skill keeps slots in the session: Botpress 12 renamed it.
    pub fn slots_key(self) -> &'static str {
        if self.0 >= 12 {
            "slots"
        } else {
            "extractedSlots"
        }
    }

    /// Botpress 12.20 counts slot retries in `temp.tryFillSlotCount`, which
    /// `slot_update_contexts` starts at 1.
    pub fn counts_slot_tries_in_temp(self) -> bool {
        self >= BotpressVersion(12, 20, 0)
    }

    /// The least confidence a QnA suggestion needs to be elected.
    pub fn min_qna_confidence(self) -> f64 {
        if self.0 >= 12 {
            0.5
        } else {
            0.3
        }
    }

    /// Botpress 12.26 added the `before_conversation_end` hook.
    pub fn has_conversation_end(self) -> bool {
        self >= BotpressVersion(12, 26, 0)
    }

    /// Botpress 12.1.5 added the infinite-loop guard and the error flow.
    pub fn has_loop_guard(self) -> bool {
        self >= BotpressVersion(12, 1, 5)
    }
}

pub struct Bot {
    pub id: String,
    pub botpress_version: BotpressVersion,
    pub dir: PathBuf,
    pub name: String,
    pub default_language: String,
    pub private: bool,
    /// `bot.config.json` → `converse.enableUnsecuredEndpoint`, when set.
    pub converse_unsecured: Option<bool>,
    pub timeout_interval: Duration,
    pub session_timeout_interval: Duration,
    /// `dialog.error`: the content type and args sent when a turn fails.
    pub error_content: (String, Map<String, Value>),
    pub flows: HashMap<String, Flow>,
    pub conditions: HashMap<String, Condition>,
    pub elements: HashMap<String, ContentElement>,
    pub qna: Vec<QnaEntry>,
    pub qna_renderer: String,
    /// The NLU of the default language.
    pub nlu: Nlu,
    /// `bot.config.json`'s `languages` (the default language first). Botpress 11 folders, and
    /// 12 folders of one language, have only the default one.
    pub languages: Vec<String>,
    /// The NLU of each other language of a Botpress 12 folder.
    pub other_nlus: Vec<(String, Nlu)>,
    /// Each intent's NLU contexts (what `slot_update_contexts` listens to).
    pub intent_contexts: HashMap<String, Vec<String>>,
    /// How the choice skill reads answers (the `basic-skills` module's configuration).
    pub choice: ChoiceConfig,
    /// A fingerprint of the folder's files, to notice edits and reload.
    pub fingerprint: u64,
    /// Limits of one action call and of one hook call (`bot.config.json` → `scripts`).
    pub action_limits: js::Limits,
    pub hook_limits: js::Limits,
    /// The hook files that run on this bot's events (global, then the bot's own).
    pub hooks: js::Hooks,
}

/// The `basic-skills` configuration `choice_parse_answer` reads at run time (schema defaults <
/// `data/global/config/basic-skills.json` < `BP_BASIC-SKILLS_*` < the bot's
/// `config/basic-skills.json`, as Botpress's `getModuleConfigForBot`). Its other keys only
/// feed Botpress's flow editor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChoiceConfig {
    /// `matchNumbers`: "2" picks the element's second choice.
    pub match_numbers: bool,
    /// `matchNLU`: an `intent:<name>` keyword matches the understood intent.
    pub match_nlu: bool,
}

impl ChoiceConfig {
    /// Reads the merged configuration with JavaScript's truthiness, as the action's
    /// `if (config.matchNumbers && …)` does (so `"false"` counts as true).
    pub fn from_module_config(config: &Map<String, Value>) -> ChoiceConfig {
        let flag = |key: &str| content::truthy(config.get(key).unwrap_or(&Value::Null));
        ChoiceConfig {
            match_numbers: flag("matchNumbers"),
            match_nlu: flag("matchNLU"),
        }
    }
}

/// What loading one bot folder gave.
pub struct LoadOutcome {
    /// `None` when an error keeps the bot from loading (or it is disabled).
    pub bot: Option<Bot>,
    /// Problems that keep the bot from loading.
    pub errors: Vec<Problem>,
    /// Problems the bot loads with (a custom action, an unknown target): they fail at run time.
    pub warnings: Vec<Problem>,
    pub disabled: bool,
}

/// The ids of the folders in `data/bots` that have a `bot.config.json`, sorted.
pub fn list_bot_dirs(data_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(data_dir.join("bots"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("bot.config.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}

pub fn load_bot(settings: &Settings, id: &str) -> LoadOutcome {
    let shown_root = format!("{}/bots/{id}", settings.data_dir.display());
    let mut out = LoadOutcome {
        bot: None,
        errors: Vec::new(),
        warnings: Vec::new(),
        disabled: false,
    };
    if !crate::store::is_valid_bot_id(id) {
        out.errors.push(Problem::new(
            &shown_root,
            "the folder name is not a valid bot id (letters, digits, _ and -, 4 to 64 characters, starting and ending with a letter or digit)",
        ));
        return out;
    }
    let dir = settings.data_dir.join("bots").join(id);
    let config_shown = format!("{shown_root}/bot.config.json");
    let config = match crate::config::read_json(&dir.join("bot.config.json")) {
        Ok(Value::Object(c)) => c,
        Ok(_) => {
            out.errors
                .push(Problem::new(&config_shown, "must be a JSON object"));
            return out;
        }
        Err(p) => {
            out.errors.push(Problem::new(&config_shown, p.message));
            return out;
        }
    };
    if config.get("disabled").and_then(Value::as_bool) == Some(true) {
        out.disabled = true;
        return out;
    }
    if config.get("oneflow").and_then(Value::as_bool) == Some(true) {
        out.errors.push(Problem::new(
            &config_shown,
            "oneflow: true makes this a Botpress 12 NDU bot (workflows started by triggers), which botd does not run",
        ));
        return out;
    }
    let default_language = match config.get("defaultLanguage").and_then(Value::as_str) {
        Some(l) => l.to_string(),
        None => {
            out.warnings.push(Problem::new(
                &config_shown,
                "no \"defaultLanguage\"; botd uses \"en\" (Botpress 11.8 would disable this bot)",
            ));
            "en".to_string()
        }
    };
    let dialog = config.get("dialog").cloned().unwrap_or(Value::Null);
    let mut duration = |key: &str, default: Duration| match dialog.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) => units::parse_duration(s).unwrap_or_else(|e| {
            out.errors
                .push(Problem::new(&config_shown, format!("dialog.{key}: {e}")));
            default
        }),
        Some(_) => {
            out.errors.push(Problem::new(
                &config_shown,
                format!("dialog.{key} must be a duration string like \"5m\""),
            ));
            default
        }
    };
    let timeout_interval = duration("timeoutInterval", settings.dialog.timeout_interval);
    let session_timeout_interval = duration(
        "sessionTimeoutInterval",
        settings.dialog.session_timeout_interval,
    );
    let (action_limits, hook_limits) =
        script_limits(config.get("scripts"), &config_shown, &mut out.errors);
    let error_content = match dialog.get("error") {
        Some(Value::Object(e)) => (
            e.get("contentType")
                .and_then(Value::as_str)
                .unwrap_or("builtin_text")
                .trim_start_matches('#')
                .to_string(),
            e.get("args")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        ),
        _ => default_error_content(),
    };

    let (flow_list, flow_problems) = flow::load_flows(&dir.join("flows"), &shown_root);
    out.errors.extend(flow_problems);
    let flows: HashMap<String, Flow> = flow_list.into_iter().map(|f| (f.name.clone(), f)).collect();
    if !flows.contains_key("main.flow.json") && out.errors.is_empty() {
        out.errors.push(Problem::new(
            format!("{shown_root}/flows"),
            "there is no main.flow.json, where every conversation starts",
        ));
    }
    let mut conditions = HashMap::new();
    out.warnings
        .extend(flow::check_references(&flows, &shown_root, &mut conditions));

    let content::LoadedElements {
        elements,
        errors: element_errors,
        warnings: element_warnings,
    } = content::load_elements(&dir.join("content-elements"), &shown_root);
    out.errors.extend(element_errors);
    out.warnings.extend(element_warnings);
    out.warnings.extend(actions::check_flow_calls(
        &flows,
        &elements,
        &shown_root,
        &dir,
    ));
    out.warnings.extend(js::check_scripts(
        &dir,
        &shown_root,
        &js::Roots::for_bot(&dir),
    ));

    let (nlu_config, nlu_problems) = settings.module_config("nlu", Some(&dir));
    out.errors.extend(nlu_problems);
    let (qna_config, qna_problems) = settings.module_config("qna", Some(&dir));
    out.errors.extend(qna_problems);
    if qna_config
        .get("qnaMakerApiKey")
        .and_then(Value::as_str)
        .is_some_and(|k| !k.is_empty())
    {
        out.errors.push(Problem::new(
            format!("{shown_root}/config/qna.json"),
            "qnaMakerApiKey: Microsoft QnA Maker is not supported by botd",
        ));
    }
    // Botpress reads the module's configuration without checking it: a bad value is a
    // warning, and read as JavaScript reads it.
    let (skills_config, skills_problems) = settings.module_config("basic-skills", Some(&dir));
    out.warnings.extend(skills_problems);
    let choice = ChoiceConfig::from_module_config(&skills_config);
    let element_type = skills_config
        .get("defaultContentElement")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !content::truthy(
        skills_config
            .get("disableIntegrityCheck")
            .unwrap_or(&Value::Null),
    ) && !content::CONTENT_TYPES.contains(&element_type)
    {
        out.warnings.push(Problem::new(
            format!("{shown_root}/config/basic-skills.json"),
            format!("defaultContentElement: Configured to use Content Element \"{element_type}\", but it was not found (botd renders {})", content::CONTENT_TYPES.join(", ")),
        ));
    }
    for module in ["channel-messenger", "channel-telegram"] {
        out.errors
            .extend(settings.module_config(module, Some(&dir)).1);
    }
    let qna_dir = qna_config
        .get("qnaDir")
        .and_then(Value::as_str)
        .unwrap_or("./qna");
    let botpress_version =
        BotpressVersion::from_config(config.get("version").and_then(Value::as_str))
            .or_inferred(&config, &flows, &dir);
    let languages = bot_languages(&config, &default_language, botpress_version);
    let loaded_qna = qna::load(
        &dir.join(qna_dir),
        &shown_root,
        &default_language,
        &languages,
    );
    // An unreadable QnA file leaves that entry out; the bot runs without it.
    out.warnings.extend(
        loaded_qna
            .errors
            .into_iter()
            .map(|p| Problem::new(p.path, format!("{}; the entry is left out", p.message))),
    );
    out.warnings.extend(loaded_qna.warnings);
    let qna_entries = loaded_qna.entries;
    for entry in &qna_entries {
        if let Some(f) = &entry.redirect_flow {
            let ok = flows.get(f).is_some_and(|flow| {
                entry
                    .redirect_node
                    .as_ref()
                    .is_none_or(|n| flow.node(n).is_some())
            });
            if !ok {
                out.warnings.push(Problem::new(
                    format!("{shown_root}/qna/{}.json", entry.id),
                    format!(
                        "redirects to {f}#{} which does not exist",
                        entry.redirect_node.clone().unwrap_or_default()
                    ),
                ));
            }
        }
    }

    let (mut intents, entities, nlu_file_problems) =
        nlu::load_bot_nlu_files(&dir, &default_language);
    // A broken intent or entity file does not stop the bot (its flows run; Botpress's NLU
    // would fail to train it): the file, or the field named, is left out of training.
    out.warnings.extend(nlu_file_problems.into_iter().map(|p| {
        Problem::new(
            p.path,
            format!("{}; the NLU is trained without it", p.message),
        )
    }));
    intents.retain(|i| !i.name.starts_with(qna::INTENT_PREFIX));
    intents.extend(qna::intents(&qna_entries, &default_language));
    if !out.errors.is_empty() {
        return out;
    }
    // Botpress 12 trains one model per language, each on that language's utterances and
    // questions.
    let other_intents: Vec<(String, Vec<nlu::IntentDef>)> = languages
        .iter()
        .filter(|l| **l != default_language)
        .map(|lang| {
            let (mut list, _, _) = nlu::load_bot_nlu_files(&dir, lang);
            list.retain(|i| !i.name.starts_with(qna::INTENT_PREFIX));
            list.extend(qna::intents(&qna_entries, lang));
            (lang.clone(), list)
        })
        .collect();
    let intent_contexts = intents
        .iter()
        .map(|i| (i.name.clone(), i.contexts.clone()))
        .collect();
    let threshold = nlu_config
        .get("confidenceTreshold")
        .and_then(Value::as_f64)
        .unwrap_or(0.7);
    let nlu_settings = NluConfig {
        system_entities: nlu_config
            .get("ducklingEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        ..NluConfig::with_threshold(threshold)
    };
    // The built-in word vectors are English: other languages' models do without them.
    let settings_for = |lang: &str| NluConfig {
        english_vectors: lang == "en",
        ..nlu_settings
    };
    let nlu = Nlu::train(&intents, &entities, &settings_for(&default_language));
    let other_nlus = other_intents
        .into_iter()
        .map(|(lang, list)| {
            let nlu = Nlu::train(&list, &entities, &settings_for(&lang));
            (lang, nlu)
        })
        .collect();

    out.bot = Some(Bot {
        id: id.to_string(),
        botpress_version,
        languages,
        other_nlus,
        name: config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(id)
            .to_string(),
        private: config
            .get("private")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        converse_unsecured: config
            .get("converse")
            .and_then(|c| c.get("enableUnsecuredEndpoint"))
            .and_then(Value::as_bool),
        fingerprint: fingerprint(&dir),
        hooks: js::Hooks::load(&dir),
        dir,
        default_language,
        timeout_interval,
        session_timeout_interval,
        error_content,
        flows,
        conditions,
        elements,
        qna: qna_entries,
        qna_renderer: qna_config
            .get("textRenderer")
            .and_then(Value::as_str)
            .unwrap_or("#builtin_text")
            .trim_start_matches('#')
            .to_string(),
        nlu,
        intent_contexts,
        choice,
        action_limits,
        hook_limits,
    });
    out
}

/// Whether the folder's intents or QnA entries key their utterances or questions by
/// language, which Botpress 12 does and 11 does not.
fn keyed_by_language(bot_dir: &Path) -> bool {
    let keyed = |folder: &str, field: &dyn Fn(&Value) -> &Value| {
        std::fs::read_dir(bot_dir.join(folder))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| crate::config::read_json(&e.path()).ok())
            .any(|json| field(&json).is_object())
    };
    keyed("intents", &|j| &j["utterances"]) || keyed("qna", &|j| &j["data"]["questions"])
}

/// The languages a bot speaks: the default one first, then the other ones of
/// `bot.config.json`'s `languages` (Botpress 12; a Botpress 11 folder speaks its default
/// language only).
fn bot_languages(
    config: &Map<String, Value>,
    default_language: &str,
    version: BotpressVersion,
) -> Vec<String> {
    let mut languages = vec![default_language.to_string()];
    if version.0 < 12 {
        return languages;
    }
    for lang in config
        .get("languages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !languages.iter().any(|l| l == lang) {
            languages.push(lang.to_string());
        }
    }
    languages
}

/// `scripts.actionTimeout` (5 s, Botpress's), `scripts.hookTimeout` (1 s, Botpress's) and
/// `scripts.memoryLimit` (32 MB) of `bot.config.json`: botd's own keys, since Botpress enforces
/// none of these.
fn script_limits(
    scripts: Option<&Value>,
    shown: &str,
    errors: &mut Vec<Problem>,
) -> (js::Limits, js::Limits) {
    let mut action = js::Limits::ACTION;
    let mut hook = js::Limits::HOOK;
    let Some(scripts) = scripts.filter(|s| !s.is_null()) else {
        return (action, hook);
    };
    let mut text = |key: &str| match scripts.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(Problem::new(
                shown,
                format!("scripts.{key} must be a string"),
            ));
            None
        }
    };
    let action_timeout = text("actionTimeout");
    let hook_timeout = text("hookTimeout");
    let memory = text("memoryLimit");
    for (key, value, limits) in [
        ("actionTimeout", action_timeout, &mut action),
        ("hookTimeout", hook_timeout, &mut hook),
    ] {
        if let Some(v) = value {
            match units::parse_duration(&v) {
                Ok(d) => limits.deadline = d,
                Err(e) => errors.push(Problem::new(shown, format!("scripts.{key}: {e}"))),
            }
        }
    }
    if let Some(v) = memory {
        match units::parse_size(&v) {
            // Below 1 MB even the SDK does not fit.
            Ok(n) if n >= 1 << 20 => {
                action.memory_bytes = n as usize;
                hook.memory_bytes = n as usize;
            }
            Ok(_) => errors.push(Problem::new(shown, "scripts.memoryLimit: at least 1mb")),
            Err(e) => errors.push(Problem::new(shown, format!("scripts.memoryLimit: {e}"))),
        }
    }
    (action, hook)
}

/// §2.5's default error message.
pub fn default_error_content() -> (String, Map<String, Value>) {
    let mut args = Map::new();
    args.insert(
        "text".into(),
        Value::String(
            "😯 Oops! We've got a problem. Please try something else while we're fixing it 🔨"
                .into(),
        ),
    );
    args.insert("typing".into(), Value::Bool(true));
    ("builtin_text".into(), args)
}

/// A cheap fingerprint of every file's path, size and modification time in the bot folder
/// (except `media/`), so edits are noticed without reading contents.
pub fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in read.flatten() {
            let path = e.path();
            if path.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n != "media" && n != "models")
                {
                    stack.push(path);
                }
            } else if let Ok(meta) = e.metadata() {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
                entries.push((path, meta.len(), mtime));
            }
        }
    }
    entries.sort();
    entries.hash(&mut hasher);
    hasher.finish()
}

impl Bot {
    pub fn flow(&self, name: &str) -> Option<&Flow> {
        self.flows.get(name)
    }

    /// The NLU trained for `lang` (the default language's for any other).
    pub fn nlu_for(&self, lang: &str) -> &Nlu {
        self.other_nlus
            .iter()
            .find(|(l, _)| l == lang)
            .map_or(&self.nlu, |(_, nlu)| nlu)
    }

    /// The language Botpress 12's NLU predicts in (its `_detectLang`): the language detected
    /// in the last three messages and this one, when it is one of the bot's, else the
    /// default language. Also gives the detected language (`n/a` when none of the bot's).
    pub fn prediction_language(&self, text: &str, last_messages: &[String]) -> (String, String) {
        let mut joined: Vec<&str> = last_messages
            .iter()
            .rev()
            .take(3)
            .map(String::as_str)
            .collect();
        joined.push(text);
        let detected = nlu::detect_language(&joined.join(" "));
        if self.languages.contains(&detected) {
            (detected.clone(), detected)
        } else {
            (self.default_language.clone(), "n/a".to_string())
        }
    }

    /// The parsed condition, from the load-time cache (queues saved by an older version of
    /// the bot may hold conditions that are not in it; those are parsed on the spot); what
    /// the native evaluator refuses runs as JavaScript.
    pub fn eval_condition(&self, source: &str, scope: &Value) -> Result<bool, String> {
        if source.trim() == "true" {
            return Ok(true);
        }
        match self.conditions.get(source) {
            Some(c) => Ok(c.eval(scope)),
            // Beyond the native subset: the JavaScript engine, as Botpress evaluates it.
            None => match Condition::parse(source) {
                Ok(c) => Ok(c.eval(scope)),
                Err(_) => js::eval_condition(source, scope, self.action_limits),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_folder_without_a_botpress_12_version_is_read_from_what_it_holds() {
        let config = |v: Value| v.as_object().unwrap().clone();
        let none = HashMap::new();
        let no_dir = Path::new("/nonexistent");
        let v11 = BotpressVersion::from_config(Some("1.0.0"));
        assert_eq!(v11, BotpressVersion(11, 9, 7));
        assert_eq!(v11.or_inferred(&config(json!({})), &none, no_dir), v11);
        assert_eq!(
            v11.or_inferred(
                &config(json!({"messaging": {"channels": {}}})),
                &none,
                no_dir
            ),
            BotpressVersion(12, 24, 0)
        );
        let choice = flow::parse_flow(
            "skills/choice-1.flow.json",
            &json!({"version": "0.0.1", "startNode": "parse", "nodes": [{"id": "p001", "name": "parse",
                "onEnter": [], "next": [],
                "onReceive": ["basic-skills/choice_parse_answer {\"randomId\":\"x1\",\"keywords\":{}}"]}]}),
        )
        .unwrap();
        let flows = HashMap::from([(choice.name.clone(), choice)]);
        assert_eq!(
            v11.or_inferred(&config(json!({})), &flows, no_dir),
            BotpressVersion(12, 3, 0)
        );
        // Intents keyed by language are Botpress 12's.
        let dir = std::env::temp_dir().join(format!("botd-infer-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("intents")).unwrap();
        std::fs::write(
            dir.join("intents/hi.json"),
            r#"{"name":"hi","utterances":["hi"]}"#,
        )
        .unwrap();
        assert_eq!(v11.or_inferred(&config(json!({})), &none, &dir), v11);
        std::fs::write(
            dir.join("intents/hi.json"),
            r#"{"name":"hi","utterances":{"en":["hi"]}}"#,
        )
        .unwrap();
        assert_eq!(
            v11.or_inferred(&config(json!({})), &none, &dir),
            BotpressVersion(12, 0, 0)
        );
        let _ = std::fs::remove_dir_all(&dir);
        // A stated Botpress 12 version is kept.
        let v12 = BotpressVersion::from_config(Some("12.1.6"));
        assert_eq!(
            v12.or_inferred(&config(json!({"messaging": {}})), &flows, no_dir),
            v12
        );
    }
}
