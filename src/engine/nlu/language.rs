//! Language identification without a model file: the script decides for non-Latin
//! alphabets (kana → ja, Han → zh, Cyrillic → ru, Arabic → ar, …); Latin-script text is
//! scored against small built-in profiles of function words, letter trigrams and diacritics.

/// Latin-script languages we can tell apart.
const LATIN: [&str; 7] = ["en", "fr", "es", "de", "pt", "it", "nl"];

/// Frequent short words (function words, greetings) per language, in `LATIN` order.
const WORDS: [&[&str]; 7] = [
    &[
        "the", "and", "is", "are", "you", "to", "of", "in", "it", "that", "what", "how", "my",
        "me", "i", "for", "with", "this", "was", "can", "do", "please", "hello", "hi", "hey",
        "thanks", "yes", "no", "not", "have", "will", "your", "where", "when", "why", "who",
        "would", "could", "should", "there", "they", "we", "be", "an", "a", "on", "at", "from",
        "want", "need", "good", "morning", "bye", "name", "time", "about", "just", "like",
    ],
    &[
        "le", "la", "les", "de", "des", "du", "et", "est", "je", "tu", "il", "elle", "nous",
        "vous", "un", "une", "que", "qui", "pour", "dans", "pas", "ne", "sur", "avec", "mon", "ma",
        "mes", "ce", "cette", "bonjour", "salut", "merci", "oui", "non", "au", "aux", "suis",
        "êtes", "sont", "ai", "avez", "veux", "voudrais", "comment", "quoi", "où", "très", "bien",
        "aussi", "mais", "ou", "se", "en", "par", "plus", "il", "y", "c'est",
    ],
    &[
        "el", "la", "los", "las", "de", "del", "y", "es", "en", "que", "un", "una", "por", "para",
        "con", "no", "se", "mi", "tu", "yo", "hola", "gracias", "sí", "como", "cómo", "qué",
        "dónde", "está", "estoy", "son", "al", "lo", "le", "muy", "pero", "quiero", "puedo",
        "tengo", "buenos", "días", "buenas", "noches", "usted", "nosotros", "hay", "también",
        "este", "esta", "eso", "cuando", "porque", "bien",
    ],
    &[
        "der", "die", "das", "und", "ist", "ich", "du", "sie", "wir", "ein", "eine", "nicht",
        "mit", "zu", "von", "den", "dem", "auf", "für", "es", "im", "in", "hallo", "danke",
        "bitte", "ja", "nein", "wie", "was", "wo", "warum", "mein", "meine", "haben", "habe",
        "bin", "sind", "kann", "möchte", "guten", "tag", "morgen", "auch", "aber", "oder", "noch",
        "schon", "sehr", "gut", "wer", "wann", "kein", "keine", "heute",
    ],
    &[
        "o", "a", "os", "as", "de", "do", "da", "dos", "das", "e", "é", "em", "no", "na", "que",
        "um", "uma", "para", "com", "não", "eu", "você", "meu", "minha", "olá", "oi", "obrigado",
        "obrigada", "sim", "como", "onde", "está", "estou", "são", "por", "mais", "muito", "mas",
        "quero", "posso", "tenho", "bom", "dia", "boa", "noite", "tarde", "também", "isso", "isto",
        "quando", "porque", "ao", "nós", "seu", "sua",
    ],
    &[
        "il",
        "lo",
        "la",
        "i",
        "gli",
        "le",
        "di",
        "del",
        "della",
        "e",
        "è",
        "in",
        "che",
        "un",
        "una",
        "per",
        "con",
        "non",
        "mi",
        "ti",
        "io",
        "tu",
        "ciao",
        "grazie",
        "sì",
        "come",
        "dove",
        "sono",
        "sei",
        "ho",
        "hai",
        "ha",
        "buongiorno",
        "buonasera",
        "anche",
        "ma",
        "molto",
        "voglio",
        "posso",
        "questo",
        "questa",
        "quando",
        "perché",
        "cosa",
        "al",
        "nel",
        "alla",
        "dei",
        "delle",
        "si",
        "bene",
        "ci",
        "vorrei",
    ],
    &[
        "de",
        "het",
        "een",
        "en",
        "is",
        "ik",
        "je",
        "jij",
        "u",
        "wij",
        "we",
        "niet",
        "van",
        "in",
        "op",
        "te",
        "met",
        "voor",
        "dat",
        "die",
        "dit",
        "er",
        "zijn",
        "mijn",
        "hallo",
        "dank",
        "bedankt",
        "alsjeblieft",
        "ja",
        "nee",
        "hoe",
        "wat",
        "waar",
        "waarom",
        "wie",
        "wanneer",
        "heb",
        "hebt",
        "heeft",
        "kan",
        "wil",
        "graag",
        "goedemorgen",
        "goed",
        "ook",
        "maar",
        "of",
        "nog",
        "al",
        "zeer",
        "erg",
        "naar",
        "uit",
        "om",
        "bij",
    ],
];

/// Letter trigrams typical of each language (spaces mark word edges), in `LATIN` order.
const TRIGRAMS: [&[&str]; 7] = [
    &[
        "the", "he ", " th", "ing", "ng ", "and", "nd ", "ion", "tio", " wh", "ou ", "you", "hat",
        "tha", "ith", "wit", "ght", "ly ", "ed ", "ee ", "oo", "ay ", "ey ", "ow ",
    ],
    &[
        "es ", "ent", "ez ", "que", "ous", "les", "eur", "aux", "oi", "ais", "ait", "ui ", "eau",
        "é ", "è", "ê", "ç", "ien", "tre", "ll", "qu'", "d'", "l'", "j'",
    ],
    &[
        "os ", "as ", "que", "ión", "ado", "ada", "ñ", "ci", "nte", "ía", "ue", " y ", "llo",
        "lla", "ar ", "er ", "ir ", "ad ", "ón ", "¿", "¡", "uest", "stá", "ues",
    ],
    &[
        "sch", "ich", "ein", "cht", "der", "die", "und", "ung", "en ", "er ", "ß", "ä", "ö", "ü",
        "ie", "ei", "gen", "ten", " zu", "tz", "aus", "auf", "ach", "eit",
    ],
    &[
        "ão", "ões", "ção", "os ", "as ", "nh", "lh", "ê", "ã", "õ", "ç", "ado", "ada", "que",
        "em ", "um ", " é ", "ar ", "dade", "ível", "ei ", "ou ", "ta ", "ia ",
    ],
    &[
        "che", "ell", "zio", "gli", "lla", "ere", "are", "ato", "ti ", "ni ", "re ", "io ", "i ",
        "o ", "à", "ò", "ù", "ì", "cc", "zz", "tt", "ss", "one", "sono",
    ],
    &[
        "ij", "aa", "ee", "oo", "uu", "sch", "cht", "een", "het", "van", "oe", "ui", "ijk", "en ",
        "de ", "ge", "ver", "nd ", "je ", "lijk", "tje", "ik ", "wij", "zij",
    ],
];

fn script_language(c: char) -> Option<&'static str> {
    let u = c as u32;
    Some(match u {
        0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => "ja",
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF => "zh",
        0x0400..=0x052F => "ru",
        0x0600..=0x06FF | 0x0750..=0x077F | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => "ar",
        0xAC00..=0xD7AF | 0x1100..=0x11FF => "ko",
        0x0370..=0x03FF => "el",
        0x0590..=0x05FF => "he",
        0x0E00..=0x0E7F => "th",
        0x0900..=0x097F => "hi",
        _ => return None,
    })
}

/// The language of `text` as an ISO 639-1 code (`"en"`, `"fr"`, …), or `"n/a"` when the text
/// is too short or gives no evidence.
pub fn detect_language(text: &str) -> String {
    let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() < 3
        && !letters
            .iter()
            .any(|c| script_language(*c).is_some_and(|l| l == "zh" || l == "ja"))
    {
        return "n/a".to_string();
    }
    if letters.is_empty() {
        return "n/a".to_string();
    }
    // Non-Latin scripts: the most frequent script wins, except that any kana means Japanese
    // (Japanese text mixes kana with Han characters).
    let mut script_counts: Vec<(&str, usize)> = Vec::new();
    for c in &letters {
        if let Some(l) = script_language(*c) {
            match script_counts.iter_mut().find(|(k, _)| *k == l) {
                Some((_, n)) => *n += 1,
                None => script_counts.push((l, 1)),
            }
        }
    }
    let non_latin: usize = script_counts.iter().map(|(_, n)| n).sum();
    if non_latin * 2 >= letters.len() {
        if script_counts.iter().any(|(l, _)| *l == "ja") {
            return "ja".to_string();
        }
        script_counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let lang = script_counts[0].0;
        // Letters only Ukrainian uses among Cyrillic alphabets.
        if lang == "ru" && text.chars().any(|c| matches!(c, 'і' | 'ї' | 'є' | 'ґ')) {
            return "uk".to_string();
        }
        // Persian letters absent from Arabic.
        if lang == "ar" && text.chars().any(|c| matches!(c, 'پ' | 'چ' | 'ژ' | 'گ')) {
            return "fa".to_string();
        }
        return lang.to_string();
    }
    latin_language(text).unwrap_or("n/a").to_string()
}

/// Non-overlapping occurrences of `pattern` in `text`, left to right: what `str::matches`
/// counts (UTF-8 bytes of one character never start another), without building a substring
/// searcher per pattern: the patterns are 2-3 letters and a message is short.
fn count_matches(text: &[u8], pattern: &[u8]) -> usize {
    let (mut count, mut at) = (0, 0);
    while at + pattern.len() <= text.len() {
        if text[at..].starts_with(pattern) {
            count += 1;
            at += pattern.len();
        } else {
            at += 1;
        }
    }
    count
}

fn latin_language(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphabetic() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let mut scores = [0f64; 7];
    for w in &words {
        let owners: Vec<usize> = (0..LATIN.len()).filter(|&i| WORDS[i].contains(w)).collect();
        for &i in &owners {
            // A word shared by k languages is worth 1/k to each.
            scores[i] += 2.0 / owners.len() as f64;
        }
    }
    let padded = format!(" {} ", words.join(" "));
    for (i, grams) in TRIGRAMS.iter().enumerate() {
        for g in grams.iter() {
            scores[i] += 0.25 * count_matches(padded.as_bytes(), g.as_bytes()) as f64;
        }
    }
    let (best, &top) = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let second = scores
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, s)| *s)
        .fold(0.0, f64::max);
    // Need some evidence and a lead; a single short token rarely gives both.
    if top < 1.0 || top - second < 0.25 {
        return None;
    }
    Some(LATIN[best])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_counts_agree_with_str_matches() {
        for (text, pattern) in [
            (" hello there ", "he"),
            ("oooo", "oo"),
            (" ação não ", "ão"),
            ("", "the"),
            ("th", "the"),
            (" the theme the ", "the"),
        ] {
            assert_eq!(
                count_matches(text.as_bytes(), pattern.as_bytes()),
                text.matches(pattern).count(),
                "{text:?} / {pattern:?}"
            );
        }
    }

    #[test]
    fn language_table() {
        let table = [
            ("Hello, how are you today?", "en"),
            (
                "I would like to book a table for two people tomorrow evening",
                "en",
            ),
            ("hi bot", "en"),
            ("Bonjour, comment allez-vous ?", "fr"),
            (
                "Je voudrais réserver une table pour deux personnes demain soir",
                "fr",
            ),
            ("Hola, ¿cómo estás?", "es"),
            (
                "Quiero reservar una mesa para dos personas mañana por la noche",
                "es",
            ),
            ("Guten Morgen, wie geht es dir?", "de"),
            (
                "Ich möchte morgen Abend einen Tisch für zwei Personen reservieren",
                "de",
            ),
            ("Olá, tudo bem? Eu quero uma mesa para dois", "pt"),
            ("Não sei onde está a minha chave", "pt"),
            ("Ciao, come stai? Vorrei prenotare un tavolo per due", "it"),
            ("Goedemorgen, hoe gaat het met je?", "nl"),
            ("Ik wil graag een tafel reserveren voor twee personen", "nl"),
            ("Привет, как дела?", "ru"),
            ("مرحبا كيف حالك", "ar"),
            ("你好，今天天气很好", "zh"),
            ("こんにちは、元気ですか", "ja"),
            ("東京に行きたいです", "ja"),
            ("안녕하세요", "ko"),
            ("ok", "n/a"),
            ("!!", "n/a"),
            ("1234567", "n/a"),
            ("xq", "n/a"),
            ("zzzz", "n/a"),
        ];
        let mut wrong = Vec::new();
        for (text, want) in table {
            let got = detect_language(text);
            if got != want {
                wrong.push(format!("{text:?}: got {got}, want {want}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
