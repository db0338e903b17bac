//! Unit tests of the script runner outside a turn: compilation, positions, cost.

use super::*;

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
