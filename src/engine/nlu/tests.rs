//! End-to-end tests of the NLU on the welcome-bot's intents and on small hand-made bots.

use super::*;

fn intent(name: &str, contexts: &[&str], utterances: &[&str]) -> IntentDef {
    IntentDef {
        name: name.into(),
        contexts: contexts.iter().map(|s| s.to_string()).collect(),
        utterances: utterances.iter().map(|s| s.to_string()).collect(),
        slots: vec![],
    }
}

fn welcome_bot() -> Vec<IntentDef> {
    vec![
        intent(
            "hello",
            &["global"],
            &[
                "good day!",
                "good morning",
                "holla",
                "bonjour",
                "hey there",
                "hi bot",
                "hey bot",
                "hey robot",
                "hey!",
                "hi",
                "hello",
            ],
        ),
        intent(
            "forget",
            &["global"],
            &[
                "don't remember my name",
                "delete my name from your memory",
                "erase my name",
                "forget name",
                "forget",
                "please forget my name",
                "forget my name",
            ],
        ),
        intent("none", &["global"], &["!&#^&*$^*(%", "1234567", "abcdefg"]),
    ]
}

fn understand(nlu: &Nlu, text: &str) -> (String, f64) {
    let v = nlu.understand(text, &[], 0);
    (
        v["intent"]["name"].as_str().unwrap().to_string(),
        v["intent"]["confidence"].as_f64().unwrap(),
    )
}

#[test]
fn welcome_bot_required_cases() {
    let nlu = Nlu::train(&welcome_bot(), &[], &NluConfig::default());
    let (name, conf) = understand(&nlu, "hi bot");
    assert_eq!(name, "hello");
    assert!(conf >= 0.7, "hi bot: {conf}");
    for t in ["please forget my name", "forget my name"] {
        let (name, conf) = understand(&nlu, t);
        assert_eq!(name, "forget", "{t}");
        assert!(conf >= 0.7, "{t}: {conf}");
    }
    for t in ["Sylvain", "Alice"] {
        let (name, _) = understand(&nlu, t);
        assert_eq!(name, "none", "{t}");
    }
}

#[test]
fn welcome_bot_more_names_and_gibberish_are_none() {
    let nlu = Nlu::train(&welcome_bot(), &[], &NluConfig::default());
    for t in [
        "Bob",
        "Jean-Pierre",
        "Marie Curie",
        "Mohammed",
        "Zoë",
        "asdkjh qwe",
        "42",
        "???",
    ] {
        let v = nlu.understand(t, &[], 0);
        assert_eq!(v["intent"]["name"], "none", "{t}: {v}");
    }
}

#[test]
fn output_shape() {
    let nlu = Nlu::train(&welcome_bot(), &[], &NluConfig::default());
    let v = nlu.understand("Hello   there", &[], 0);
    for key in [
        "language",
        "includedContexts",
        "intent",
        "intents",
        "entities",
        "slots",
        "errored",
        "ms",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["errored"], false);
    assert_eq!(v["includedContexts"], json!(["global"]));
    assert_eq!(v["intent"]["context"], "global");
    let intents = v["intents"].as_array().unwrap();
    let sum: f64 = intents
        .iter()
        .map(|i| i["confidence"].as_f64().unwrap())
        .sum();
    assert!(sum <= 1.0001, "{sum}");
    let names: Vec<_> = intents
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"none"));
    let confs: Vec<f64> = intents
        .iter()
        .map(|i| i["confidence"].as_f64().unwrap())
        .collect();
    assert!(confs.windows(2).all(|w| w[0] >= w[1]), "{confs:?}");
}

#[test]
fn contexts_filter_and_merge() {
    let intents = vec![
        intent(
            "order_pizza",
            &["food"],
            &[
                "i want a pizza",
                "order a pizza",
                "pizza please",
                "get me a margherita",
                "one pepperoni pizza",
            ],
        ),
        intent(
            "order_drink",
            &["food"],
            &[
                "i want a coke",
                "a beer please",
                "something to drink",
                "get me a lemonade",
                "water please",
            ],
        ),
        intent(
            "book_taxi",
            &["travel"],
            &[
                "call me a taxi",
                "i need a cab",
                "book a taxi",
                "get me a ride to the airport",
                "taxi please",
            ],
        ),
        intent(
            "book_flight",
            &["travel", "food"],
            &[
                "book a flight",
                "i want to fly to paris",
                "plane tickets",
                "find me a flight",
                "flights to london",
            ],
        ),
    ];
    let nlu = Nlu::train(&intents, &[], &NluConfig::default());
    let v = nlu.understand("book a taxi please", &["travel".to_string()], 0);
    assert_eq!(v["intent"]["name"], "book_taxi", "{v}");
    assert_eq!(v["includedContexts"], json!(["travel"]));
    let v = nlu.understand("book a taxi please", &["food".to_string()], 0);
    assert_ne!(v["intent"]["name"], "book_taxi", "{v}");
    assert!(v["intents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["name"] != "book_taxi"));
    let v = nlu.understand("one pepperoni pizza", &[], 0);
    assert_eq!(v["intent"]["name"], "order_pizza", "{v}");
    assert_eq!(v["includedContexts"], json!(["food", "travel"]));
    // De-duplicated by name even though book_flight is in two contexts.
    let names: Vec<_> = v["intents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    let mut dedup = names.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(names.len(), dedup.len(), "{names:?}");
}

#[test]
fn choose_intent_rules() {
    let s = |n: &str, c: f64| IntentScore {
        name: n.into(),
        confidence: c,
        context: "global".into(),
    };
    assert_eq!(choose_intent(&[s("a", 0.8), s("b", 0.1)], 0.7).name, "a");
    // Below threshold, z-score lead: 0.6 vs 0.1, 0.1, 0.1, 0.1.
    let many = [
        s("a", 0.6),
        s("b", 0.1),
        s("c", 0.1),
        s("d", 0.1),
        s("e", 0.1),
    ];
    assert_eq!(choose_intent(&many, 0.7).name, "a");
    // Two close ones: none.
    let close = [s("a", 0.4), s("b", 0.38), s("c", 0.22)];
    let none = choose_intent(&close, 0.7);
    assert_eq!(
        (none.name.as_str(), none.confidence, none.context.as_str()),
        ("none", 1.0, "global")
    );
    // Fewer than three intents and below threshold: none.
    assert_eq!(choose_intent(&[s("a", 0.6), s("b", 0.4)], 0.7).name, "none");
    assert_eq!(choose_intent(&[], 0.7).name, "none");
}

#[test]
fn threshold_outside_unit_interval_falls_back() {
    assert_eq!(NluConfig::with_threshold(1.5).confidence_threshold, 0.7);
    assert_eq!(NluConfig::with_threshold(-0.1).confidence_threshold, 0.7);
    assert_eq!(NluConfig::with_threshold(0.4).confidence_threshold, 0.4);
}

#[test]
fn slot_markup_is_stripped() {
    let (text, spans) = strip_slot_markup("fly from [Paris](from) to [New York](to) [now");
    assert_eq!(text, "fly from Paris to New York [now");
    assert_eq!(spans.len(), 2);
    assert_eq!(&text[spans[0].start..spans[0].end], "Paris");
    assert_eq!(spans[1].slot, "to");
    assert_eq!(&text[spans[1].start..spans[1].end], "New York");
}

#[test]
fn loads_bot_files_and_reports_problems() {
    let dir = std::env::temp_dir().join(format!("botd-nlu-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("intents")).unwrap();
    std::fs::create_dir_all(dir.join("entities")).unwrap();
    std::fs::write(
        dir.join("intents/book.json"),
        r#"{"name":"Booking","contexts":["travel"],"utterances":["book [paris](city)"],"slots":[{"name":"city","entity":"cities"}]}"#,
    ).unwrap();
    std::fs::write(
        dir.join("intents/later.json"),
        r#"{"utterances":{"en":["hi"]},"slots":[{"name":"x","entities":["a","b"]}]}"#,
    )
    .unwrap();
    std::fs::write(dir.join("intents/bad.json"), r#"{"utterances": "oops"}"#).unwrap();
    std::fs::write(dir.join("intents/broken.json"), "{").unwrap();
    std::fs::write(
        dir.join("entities/cities.json"),
        r#"{"name":"cities","type":"list","fuzzy":true,"occurences":[{"name":"Paris","synonyms":["city of light"]}]}"#,
    ).unwrap();
    std::fs::write(
        dir.join("entities/code.json"),
        r#"{"name":"code","type":"pattern","pattern":"[A-Z]{3}-\\d+","sensitive":true}"#,
    )
    .unwrap();
    // Botpress 12's tolerance: below 1 is fuzzy, 1 is strict.
    std::fs::write(
        dir.join("entities/towns.json"),
        r#"{"name":"towns","type":"list","fuzzy":0.8,"occurrences":[{"name":"Lyon","synonyms":[]}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("entities/exact.json"),
        r#"{"name":"exact","type":"list","fuzzy":1,"occurrences":[{"name":"Nice","synonyms":[]}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("entities/badre.json"),
        r#"{"name":"badre","type":"pattern","pattern":"(oops"}"#,
    )
    .unwrap();
    let (intents, entities, problems) = load_bot_nlu_files(&dir, "en");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(intents.len(), 2, "{intents:?}");
    // Botpress 11.4–12 spread the file over `{name: <file name>}`: the `name` field wins.
    assert_eq!(intents[0].name, "Booking");
    assert_eq!(intents[0].contexts, vec!["travel"]);
    assert_eq!(
        intents[0].slots,
        vec![SlotDef {
            name: "city".into(),
            entities: vec!["cities".into()]
        }]
    );
    assert_eq!(intents[1].name, "later");
    assert_eq!(intents[1].contexts, vec!["global"]);
    assert_eq!(intents[1].utterances, vec!["hi"]);
    assert_eq!(intents[1].slots[0].entities, vec!["a", "b"]);
    assert_eq!(entities.len(), 4);
    assert!(entities.iter().any(|e| e.name == "code" && e.sensitive));
    let fuzzy_of = |name: &str| match &entities.iter().find(|e| e.name == name).unwrap().kind {
        EntityKind::List { fuzzy, occurrences } => (*fuzzy, occurrences.len()),
        other => panic!("{other:?}"),
    };
    assert_eq!(fuzzy_of("towns"), (true, 1));
    assert_eq!(fuzzy_of("exact"), (false, 1));
    assert_eq!(fuzzy_of("cities"), (true, 1));
    let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 3, "{msgs:#?}");
    assert!(msgs
        .iter()
        .any(|m| m.contains("bad.json") && m.contains("utterances")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("broken.json") && m.contains("invalid JSON")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("badre.json") && m.contains("pattern")));
}

#[test]
fn sensitive_entities_are_masked() {
    let entities = vec![EntityDef {
        name: "card".into(),
        kind: EntityKind::Pattern {
            regex: r"\d{4}-\d{4}".into(),
        },
        sensitive: true,
    }];
    let nlu = Nlu::train(&welcome_bot(), &entities, &NluConfig::default());
    let text = "my card is 1234-5678 ok";
    let v = nlu.understand(text, &[], 0);
    assert_eq!(nlu.mask_sensitive(text, &v), "my card is ********* ok");
    let plain = "nothing here";
    assert_eq!(
        nlu.mask_sensitive(plain, &nlu.understand(plain, &[], 0)),
        plain
    );
}

#[test]
fn nlu_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Nlu>();
}

fn booking_bot() -> (Vec<IntentDef>, Vec<EntityDef>) {
    let intents = vec![
        IntentDef {
            name: "book_flight".into(),
            contexts: vec!["global".into()],
            utterances: [
                "fly from [paris](from) to [london](to)",
                "i want to fly to [berlin](to)",
                "book a flight from [rome](from) to [madrid](to)",
                "flight to [montreal](to) please",
                "from [london](from) to [paris](to) tomorrow",
                "get me a flight to [rome](to)",
                "i need to go from [berlin](from) to [paris](to)",
                "book a flight to [madrid](to) for [2](seats) people",
                "[3](seats) tickets to [london](to)",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            slots: vec![
                SlotDef {
                    name: "from".into(),
                    entities: vec!["city".into()],
                },
                SlotDef {
                    name: "to".into(),
                    entities: vec!["city".into()],
                },
                SlotDef {
                    name: "seats".into(),
                    entities: vec!["numeral".into()],
                },
            ],
        },
        intent(
            "greet",
            &["global"],
            &["hello", "hi there", "good morning", "hey"],
        ),
    ];
    let cities = ["Paris", "London", "Berlin", "Rome", "Madrid", "Montreal"];
    let entities = vec![EntityDef {
        name: "city".into(),
        kind: EntityKind::List {
            fuzzy: true,
            occurrences: cities
                .iter()
                .map(|c| Occurrence {
                    name: c.to_string(),
                    synonyms: vec![],
                })
                .collect(),
        },
        sensitive: false,
    }];
    (intents, entities)
}

#[test]
fn slots_are_tagged_and_checked_against_entities() {
    let (intents, entities) = booking_bot();
    let nlu = Nlu::train(&intents, &entities, &NluConfig::default());
    let v = nlu.understand("I want a flight from Madrid to Montreal", &[], 0);
    assert_eq!(v["intent"]["name"], "book_flight", "{v}");
    assert_eq!(v["slots"]["from"]["value"], "Madrid", "{v}");
    assert_eq!(v["slots"]["to"]["value"], "Montreal", "{v}");
    assert_eq!(v["slots"]["to"]["source"], "Montreal");
    assert_eq!(v["slots"]["to"]["start"], 31);
    assert_eq!(v["slots"]["to"]["end"], 39);
    assert_eq!(v["slots"]["to"]["entity"]["name"], "city");
    let c = v["slots"]["to"]["confidence"].as_f64().unwrap();
    assert!(c > 0.0 && c <= 1.0);
    // A tagged span with no entity of the slot's type is dropped; a system entity fills seats.
    let v = nlu.understand("book a flight to atlantis for 4 people", &[], 0);
    assert_eq!(v["intent"]["name"], "book_flight", "{v}");
    assert!(v["slots"].get("to").is_none(), "{v}");
    assert_eq!(v["slots"]["seats"]["value"], 4, "{v}");
    // Entities are all in `entities`, slots only for the chosen intent.
    let v = nlu.understand("hello", &[], 0);
    assert_eq!(v["slots"], json!({}));
}

#[test]
fn entities_in_understand_have_the_section_10_shape() {
    let (intents, entities) = booking_bot();
    let nlu = Nlu::train(&intents, &entities, &NluConfig::default());
    let v = nlu.understand("to Pariss for $20", &[], 0);
    let list = v["entities"].as_array().unwrap();
    let city = list.iter().find(|e| e["name"] == "city").expect("city");
    assert_eq!(city["type"], "list");
    assert_eq!(city["meta"]["provider"], "native");
    assert_eq!(city["meta"]["source"], "Pariss");
    assert_eq!(
        (city["meta"]["start"].as_u64(), city["meta"]["end"].as_u64()),
        (Some(3), Some(9))
    );
    assert_eq!(city["data"]["value"], "Paris");
    assert_eq!(city["data"]["unit"], "string");
    assert_eq!(city["data"]["extras"]["occurence"], "Paris");
    let conf = city["meta"]["confidence"].as_f64().unwrap();
    assert!((0.65..1.0).contains(&conf), "{conf}");
    let money = list
        .iter()
        .find(|e| e["name"] == "amountOfMoney")
        .expect("money");
    assert_eq!(money["type"], "system");
    assert_eq!(money["data"]["value"], 20);
    assert_eq!(money["data"]["unit"], "USD");
}

#[test]
fn system_entities_can_be_turned_off() {
    let (intents, entities) = booking_bot();
    let names = |config: &NluConfig| -> Vec<String> {
        let nlu = Nlu::train(&intents, &entities, config);
        let v = nlu.understand("to Pariss for $20 tomorrow", &[], 0);
        v["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    let on = names(&NluConfig::default());
    assert!(on.contains(&"amountOfMoney".to_string()), "{on:?}");
    assert!(on.contains(&"time".to_string()), "{on:?}");
    let off = names(&NluConfig {
        system_entities: false,
        ..NluConfig::default()
    });
    // The bot's own entities stay; the system ones (ducklingEnabled: false) go.
    assert_eq!(off, ["city"]);
}

#[test]
fn empty_bot_and_empty_text_give_none() {
    let nlu = Nlu::train(&[], &[], &NluConfig::default());
    let v = nlu.understand("hello", &[], 0);
    assert_eq!(
        v["intent"],
        json!({"name": "none", "confidence": 1.0, "context": "global"})
    );
    assert_eq!(v["intents"], json!([]));
    let nlu = Nlu::train(&welcome_bot(), &[], &NluConfig::default());
    let v = nlu.understand("", &[], 0);
    assert_eq!(v["intent"]["name"], "none", "{v}");
    assert_eq!(v["language"], "n/a");
    // An unknown context: nothing predicted.
    let v = nlu.understand("hi bot", &["nowhere".to_string()], 0);
    assert_eq!(v["intent"]["name"], "none");
    assert_eq!(v["includedContexts"], json!([]));
}

#[test]
fn entity_offsets_count_characters() {
    let nlu = Nlu::train(&welcome_bot(), &[], &NluConfig::default());
    let text = "café à 20 €";
    let v = nlu.understand(text, &[], 0);
    let money = v["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "amountOfMoney")
        .cloned()
        .expect("money");
    assert_eq!(money["meta"]["start"], 7);
    assert_eq!(money["meta"]["end"], 11);
    assert_eq!(money["meta"]["source"], "20 €");
}

#[test]
fn welcome_bot_off_topic_sentences_are_none() {
    let nlu = Nlu::train(&welcome_bot(), &[], &NluConfig::default());
    // "my name is X" answers the bot's own question: it must not trigger `forget`.
    for t in [
        "my name is Sylvain",
        "I'm Alice",
        "call me Bob",
        "what is the capital of france",
        "i like turtles",
        "what time is it",
    ] {
        let v = nlu.understand(t, &[], 0);
        assert_eq!(v["intent"]["name"], "none", "{t}: {v}");
    }
    // Still confident on the bot's own phrasing and close variants.
    for (t, want) in [
        ("hello there bot", "hello"),
        ("forget it", "forget"),
        ("erase my name please", "forget"),
    ] {
        let v = nlu.understand(t, &[], 0);
        assert_eq!(v["intent"]["name"], want, "{t}: {v}");
        assert!(
            v["intent"]["confidence"].as_f64().unwrap() >= 0.7,
            "{t}: {v}"
        );
    }
}

#[test]
fn too_small_a_context_learns_no_scope_floor() {
    // 18 utterances: too few held-out scores for a floor, so Botpress's rule alone decides.
    let nlu = Nlu::train(&welcome_bot(), &[], &NluConfig::default());
    let p = nlu.predict_intents("what is the capital of france", &[]);
    assert_eq!(p.scope, None);
    assert!(!p.out_of_scope());
}

/// Two intents of 15 utterances each about the weather and alarms.
fn weather_and_alarms() -> Vec<IntentDef> {
    let weather: Vec<String> = ["today", "tomorrow", "this weekend", "tonight", "on monday"]
        .iter()
        .flat_map(|d| {
            [
                format!("what is the weather {d}"),
                format!("will it rain {d}"),
                format!("how cold will it be {d}"),
            ]
        })
        .collect();
    let alarms: Vec<String> = ["6 am", "7 30", "noon", "9 pm", "half past eight"]
        .iter()
        .flat_map(|t| {
            [
                format!("set an alarm for {t}"),
                format!("wake me up at {t}"),
                format!("cancel my alarm at {t}"),
            ]
        })
        .collect();
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    vec![
        intent("weather", &["global"], &refs(&weather)),
        intent("alarm", &["global"], &refs(&alarms)),
    ]
}

#[test]
fn a_context_with_enough_data_learns_its_scope() {
    let nlu = Nlu::train(&weather_and_alarms(), &[], &NluConfig::default());
    let inside = nlu.predict_intents("will it rain on friday", &[]);
    assert!(inside.scope.is_some_and(|s| s >= 0.0), "{inside:?}");
    assert_eq!(nlu.choose(&inside).name, "weather");
    let outside = nlu.predict_intents("order a large pepperoni pizza", &[]);
    assert!(outside.out_of_scope(), "{outside:?}");
    assert_eq!(nlu.choose(&outside).name, NONE_INTENT);
    // `intents` still ranks the bot's intents for the out-of-scope message.
    assert!(outside.intents.iter().any(|s| s.name == "weather"));
}

/// A small shop bot taught in its author's words only.
fn shop_bot() -> Vec<IntentDef> {
    vec![
        intent(
            "buy_car",
            &["global"],
            &[
                "i want to buy a car",
                "buy a new car",
                "i'd like to buy a used car",
                "can i buy a car here",
                "how do i buy a car from you",
            ],
        ),
        intent(
            "sell_house",
            &["global"],
            &[
                "i want to sell my house",
                "sell my home",
                "help me sell my flat",
                "how do i sell a house",
                "can you sell my apartment",
            ],
        ),
        intent(
            "book_table",
            &["global"],
            &[
                "book a table for tonight",
                "reserve a table for two",
                "i need a table at your restaurant",
                "can i book a dinner table",
                "table reservation please",
            ],
        ),
    ]
}

#[test]
fn english_word_vectors_understand_words_the_bot_never_saw() {
    // "purchase" and "automobile" are in none of the utterances: only their meaning is near
    // "buy" and "car".
    let nlu = Nlu::train(&shop_bot(), &[], &NluConfig::default());
    for text in [
        "purchase an automobile",
        "i would like to purchase a vehicle",
        "acquire a new automobile",
        "i wish to get a motor vehicle",
    ] {
        let p = nlu.predict_intents(text, &[]);
        let best = p.intents.iter().find(|i| i.name != NONE_INTENT).unwrap();
        assert_eq!(best.name, "buy_car", "{text}: {:?}", p.intents);
    }
    let v = nlu.understand("i would like to purchase a vehicle", &[], 0);
    assert_eq!(v["intent"]["name"], "buy_car", "{v}");
}

#[test]
fn other_languages_train_without_the_english_vectors() {
    let english = Nlu::train(&shop_bot(), &[], &NluConfig::default());
    let other = NluConfig {
        english_vectors: false,
        ..NluConfig::default()
    };
    let other = Nlu::train(&shop_bot(), &[], &other);
    for m in &english.contexts {
        assert!(m.vectorizer.cfg.vector_weight > 0.0);
    }
    for m in &other.contexts {
        assert_eq!(m.vectorizer.cfg.vector_weight, 0.0);
        assert!(m.centroids.is_none());
        let x = m.vectorizer.transform("i want to buy a car");
        assert!(x.iter().all(|(b, _)| *b < m.vectorizer.cfg.buckets));
    }
}
