//! Unit tests of the script runner outside a turn: compilation, positions, cost.

use super::*;
use serde_json::json;

#[test]
fn syntax_errors_name_the_line() {
    let err = check_syntax("const a = 1\nconst b = ;\n", "actions/x.js").unwrap_err();
    assert!(err.starts_with("actions/x.js:2"), "{err}");
    check_syntax(
        "const a = await Promise.resolve(1)\nreturn a",
        "actions/y.js",
    )
    .unwrap();
}

#[test]
fn positions_come_from_the_first_frame_in_the_file() {
    let stack = "    at f (botd:prelude:3:1)\n    at g (actions/a.js:7:12)\n";
    assert_eq!(position(stack, "actions/a.js"), "actions/a.js:7");
    assert_eq!(position("", "actions/a.js"), "actions/a.js");
}

/// Every `*.flow.json` below `dir`.
fn flow_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            flow_files(&p, out);
        } else if p.to_string_lossy().ends_with(".flow.json") {
            out.push(p);
        }
    }
}

/// Every transition condition of the fixtures and of the shared Botpress bots.
fn all_conditions() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        root.join("data/bots"),
        root.join("tests"),
        root.join("../shared/botpress-bots"),
    ] {
        flow_files(&dir, &mut files);
    }
    let mut conditions = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(flow) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let nodes = flow["nodes"].as_array().cloned().unwrap_or_default();
        let catch_all = flow["catchAll"]["next"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let transitions = nodes
            .iter()
            .flat_map(|n| n["next"].as_array().cloned().unwrap_or_default())
            .chain(catch_all);
        for t in transitions {
            if let Some(c) = t["condition"].as_str() {
                if !conditions.iter().any(|x| x == c) {
                    conditions.push(c.to_string());
                }
            }
        }
    }
    conditions
}

/// Scopes the conditions are tried on: empty state, and state with the shapes flows test
/// (intents, entities, slots, counters, strings, booleans).
fn sample_scopes() -> Vec<Value> {
    let event = |text: &str, intent: &str, confidence: f64| {
        json!({"type": "text", "channel": "api", "target": "u1", "botId": "b", "preview": text,
            "payload": {"type": "text", "text": text},
            "nlu": {"intent": {"name": intent, "confidence": confidence},
                "intents": [{"name": intent, "confidence": confidence}],
                "entities": [{"type": "system.number", "name": "number", "data": {"value": 3, "unit": ""}}],
                "slots": {"size": {"value": "large", "name": "size"}}, "language": "en"}})
    };
    vec![
        json!({"event": event("hi", "none", 0.1), "user": {}, "temp": {}, "session": {}, "bot": {}}),
        json!({"event": event("yes", "yes", 0.95), "user": {"name": "Ada", "age": 30, "language": "en", "count": 3},
            "temp": {"count": 2, "valid": true, "choice": "pizza", "user_name": "Ada", "answer": "yes", "extracted": true, "notExtracted": false, "tryFillSlotCount": 2, "alreadyExtracted": false, "onErrorFlowTo": "x"},
            "session": {"slots": {"size": {"value": "large"}}, "extractedSlots": {"size": {"value": "large"}}, "lastMessages": []},
            "bot": {"count": 1}}),
        json!({"event": event("", "pizza", 0.5), "user": {"name": ""}, "temp": {"count": 0, "valid": false, "choice": null},
            "session": {}, "bot": {}}),
    ]
}

#[test]
fn native_conditions_and_javascript_agree_on_every_fixture_condition() {
    let conditions = all_conditions();
    assert!(
        conditions.len() > 20,
        "too few conditions found: {conditions:?}"
    );
    let scopes = sample_scopes();
    let mut compared = 0;
    let mut differences = Vec::new();
    for source in &conditions {
        let Ok(native) = crate::engine::expr::Condition::parse(source) else {
            // The native evaluator refuses it: JavaScript alone evaluates it at run time.
            continue;
        };
        for scope in &scopes {
            let js = eval_condition(source, scope, Limits::ACTION);
            compared += 1;
            if js.as_ref() != Ok(&native.eval(scope)) {
                differences.push(format!(
                    "`{source}` on {scope}: native {}, JavaScript {js:?}",
                    native.eval(scope)
                ));
            }
        }
    }
    assert!(compared > 60, "only {compared} evaluations");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn conditions_beyond_the_native_subset_run_as_javascript() {
    let scope = json!({"event": {"payload": {"text": "Hello"}}, "user": {"tags": ["a", "b"]}, "temp": {}, "session": {}, "bot": {}});
    let yes = |c: &str| eval_condition(c, &scope, Limits::ACTION);
    assert_eq!(
        yes("user.tags.map(t => t.toUpperCase()).includes('B')"),
        Ok(true)
    );
    assert_eq!(
        yes("(() => { const n = 2; return n * 2 === 4 })()"),
        Ok(true)
    );
    assert_eq!(
        yes("user.missing.deeper"),
        Ok(false),
        "a TypeError reads as false"
    );
    assert!(yes("nosuchthing > 1")
        .unwrap_err()
        .contains("ReferenceError"));
    assert!(check_condition("a >>>> 3").is_err());
    assert!(check_condition("user.age >>> 3").is_ok());
}

/// The function `compiled` gives for `file`, called in a fresh context: what it returns.
fn call_compiled(file: &Path) -> String {
    let rt = Runtime::new().unwrap();
    let ctx = Context::full(&rt).unwrap();
    ctx.with(|ctx| {
        let script = Script {
            shown: "actions/cached.js",
            file,
            globals: "",
        };
        let f = compiled(&ctx, &script).unwrap();
        // The wrapper is an async function: `finish` runs the jobs until it settles.
        let promise: rquickjs::Promise = f.call(()).unwrap();
        promise.finish::<String>().unwrap()
    })
}

#[test]
fn a_script_is_compiled_once_per_edit() {
    let dir = std::env::temp_dir().join(format!("botd-js-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cached.js");
    std::fs::write(&file, "return 'first'").unwrap();
    assert_eq!(call_compiled(&file), "first");
    let stamp = || {
        COMPILED.lock().unwrap().as_ref().unwrap()[&file]
            .bytecode
            .clone()
    };
    let cached = stamp();
    assert_eq!(call_compiled(&file), "first");
    // The same bytecode served the second call: nothing was compiled again.
    assert!(Arc::ptr_eq(&cached, &stamp()));
    // An edit (another size here) compiles the file again.
    std::fs::write(&file, "return 'second one'").unwrap();
    assert_eq!(call_compiled(&file), "second one");
    assert!(!Arc::ptr_eq(&cached, &stamp()));
    // Sloppy mode, as Botpress runs actions: an undeclared assignment makes a global.
    std::fs::write(&file, "undeclared = 'sloppy'; return undeclared").unwrap();
    assert_eq!(call_compiled(&file), "sloppy");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What Botpress's editor, its skills and bot authors write in transitions, with the value
/// JavaScript gives each on one state (worked out from the language's rules, not from botd).
/// Every one is evaluated as a turn does (natively when the native subset parses it, else in
/// QuickJS); those the native subset parses are also run in QuickJS, and both must agree.
#[test]
fn editor_skill_and_arithmetic_conditions_evaluate_as_javascript() {
    let scope = json!({
        "event": {"type": "text", "preview": "Hello World",
            "payload": {"type": "text", "text": "Hello World"},
            "nlu": {"intent": {"name": "order", "confidence": 0.82},
                "entities": [{"type": "system.number", "name": "number", "data": {"value": 3, "unit": ""}}],
                "slots": {"size": {"name": "size", "value": "large"}}, "language": "en"}},
        "user": {"age": 30, "name": "Ada", "count": "4", "tags": ["a", "b"]},
        "temp": {"skill-choice-invalid-count": 2, "skill-choice-ret": "large", "skill-choice-valid": true,
            "count": 2, "price": "12.50", "qty": 3, "extracted": "true", "notExtracted": false, "valid": true,
            "response": {"status": 200, "body": {"items": [1, 2, 3], "ok": true}}},
        "session": {"slots": {"size": {"value": "large"}}, "extractedSlots": {"size": {"value": "large"}}},
        "bot": {}
    });
    let cases: &[(&str, bool)] = &[
        // The choice, slot and API-call skills, and the editor's intent conditions.
        ("temp['skill-choice-valid'] === true", true),
        ("temp['skill-choice-ret'] == \"large\"", true),
        ("temp['skill-choice-ret'] == \"small\"", false),
        (
            "Number(temp['skill-choice-invalid-count']) >= Number(3)",
            false,
        ),
        (
            "Number(temp['skill-choice-invalid-count']) >= Number(2)",
            true,
        ),
        ("temp.extracted == \"true\"", true),
        ("temp.notExtracted == \"true\"", false),
        ("temp.valid", true),
        ("!temp.valid", false),
        ("temp.valid === false", false),
        ("temp.alreadyExtracted == \"true\"", false),
        (
            "session.extractedSlots.size && (temp.valid === undefined || temp.valid == \"true\")",
            false,
        ),
        (
            "session.slots['size'] && (temp.retry === undefined || temp.retry == \"true\")",
            true,
        ),
        ("session.slots['size'] !== undefined", true),
        ("session.extractedSlots.notFound > 0", false),
        (
            " (temp.valid === undefined || temp.valid == \"true\")",
            false,
        ),
        (
            "Number(temp['skill-choice-invalid-count-abc']) > Number(3)",
            false,
        ),
        (
            "event.nlu.intent.name === 'order' && event.nlu.intent.confidence > 0.5",
            true,
        ),
        (
            "session.extractedSlots.size && session.extractedSlots.size.value === 'large'",
            true,
        ),
        ("event.nlu.slots.size !== undefined", true),
        (
            "event.nlu.entities.length > 0 && event.nlu.entities[0].data.value === 3",
            true,
        ),
        // Arithmetic, with JavaScript's coercions.
        ("temp.count + 1 === 3", true),
        ("temp.count * temp.qty === 6", true),
        ("user.count * 2 === 8", true),
        ("user.count + 1 === 5", false),
        ("user.count + 1 === '41'", true),
        ("Number(user.count) + 1 === 5", true),
        ("parseFloat(temp.price) * temp.qty === 37.5", true),
        ("temp.qty % 2 === 1", true),
        ("temp.qty / 2 === 1.5", true),
        ("temp.missing + 1 > 0", false),
        ("isNaN(temp.missing + 1)", true),
        ("temp.missing + 'x' === 'undefinedx'", true),
        ("-temp.count === -2", true),
        ("(temp.count + temp.qty) / 2 >= 2.5", true),
        ("1 / 0 === Infinity", true),
        ("2 ** 10 === 1024", true),
        ("temp.count - '1' === 1", true),
        ("Math.round(parseFloat(temp.price)) === 13", true),
        ("user.age >= 18 ? true : false", true),
        (
            "temp.response.status >= 200 && temp.response.status < 300",
            true,
        ),
        ("temp.response.body.items.length > 2", true),
        (
            "temp.response.body.items.reduce((a, b) => a + b, 0) === 6",
            true,
        ),
        // Comparisons.
        ("'10' < '9'", true),
        ("'10' < 9", false),
        ("null == undefined", true),
        ("null === undefined", false),
        ("temp.missing == null", true),
        ("'1' == 1", true),
        ("[] == false", true),
        ("NaN === NaN", false),
        ("typeof temp.count === 'number'", true),
        ("typeof temp.missing === 'undefined'", true),
        ("Boolean(temp.notExtracted) === false", true),
        // Strings.
        ("event.payload.text.toLowerCase().includes('world')", true),
        ("event.payload.text.trim().startsWith('Hel')", true),
        ("event.payload.text.split(' ').length === 2", true),
        ("event.payload.text.match(/wor/i) !== null", true),
        (
            "event.payload.text.replace(/o/g, '0') === 'Hell0 W0rld'",
            true,
        ),
        ("event.payload.text.length > 10", true),
        ("event.payload.text.charAt(0) === 'H'", true),
        ("event.payload.text.substring(0, 5) === 'Hello'", true),
        ("`${user.name}!` === 'Ada!'", true),
        // Regular expressions.
        ("/^hello/i.test(event.payload.text)", true),
        ("/^\\d{3}$/.test(temp.qty)", false),
        ("/^\\d+(\\.\\d+)?$/.test(temp.price)", true),
        ("new RegExp('world', 'i').test(event.preview)", true),
        // Objects and arrays; a TypeError reads as false.
        ("temp.missing.length > 0", false),
        ("user.tags.includes('b') && !user.tags.includes('c')", true),
        ("Array.isArray(user.tags)", true),
        ("Object.keys(temp.response.body).length === 2", true),
        ("JSON.stringify(user.tags) === '[\"a\",\"b\"]'", true),
        ("temp?.response?.body?.ok === true", true),
        // The event carries its state, the very objects `user` and `temp` are.
        ("event.state.temp.count + 1 === 3", true),
        (
            "event.state.user === user && event.state.temp === temp",
            true,
        ),
        (
            "event.state.session.slots.size.value.toUpperCase() === 'LARGE'",
            true,
        ),
    ];
    let mut wrong = Vec::new();
    let mut native_count = 0;
    for (source, expected) in cases {
        let js = eval_condition(source, &scope, Limits::ACTION);
        let got = match crate::engine::expr::Condition::parse(source) {
            Ok(native) => {
                native_count += 1;
                if js != Ok(native.eval(&scope)) {
                    wrong.push(format!(
                        "`{source}`: native {}, JavaScript {js:?}",
                        native.eval(&scope)
                    ));
                }
                Ok(native.eval(&scope))
            }
            Err(_) => js,
        };
        if got != Ok(*expected) {
            wrong.push(format!("`{source}`: {got:?}, JavaScript gives {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Both paths are exercised.
    assert!(native_count > 20, "{native_count}");
    assert!(cases.len() - native_count > 20, "{native_count}");
}
