//! Decoder tests: typed getters, blocks, free-form config and unknown keys.

use std::collections::BTreeMap;

use super::*;

fn with_root<T>(text: &str, f: impl FnOnce(Decoder<'_>) -> T) -> T {
    let src = Source::parse("test.hcl", text).expect("parses");
    let scope = Scope::new();
    f(Decoder::root(&src, &scope))
}

#[test]
fn typed_getters() {
    let text = "s = \"x\"\nn = 3\nb = true\nl = [\"a\", 1]\nd = \"1m30s\"\nm = { a = 1, \"b.c\" = \"d\" }\n";
    with_root(text, |mut root| {
        assert_eq!(root.string("s").unwrap().as_deref(), Some("x"));
        assert_eq!(root.int("n").unwrap(), Some(3));
        assert_eq!(root.bool("b").unwrap(), Some(true));
        assert_eq!(root.strings("l").unwrap(), Some(vec!["a".to_string(), "1".to_string()]));
        assert_eq!(root.duration("d").unwrap(), Some(90_000_000_000));
        let m = root.string_map("m").unwrap().unwrap();
        assert_eq!(m.get("b.c").map(String::as_str), Some("d"));
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(root.string("absent").unwrap(), None);
    });
}

#[test]
fn type_errors_name_field_and_location() {
    with_root("\ncount = \"many\"\n", |mut root| {
        let err = root.int("count").unwrap_err();
        assert_eq!(err.to_string(), "test.hcl:2:9: count: expected a number, found a string");
    });
    with_root("n = -1\n", |mut root| {
        let err = root.number::<u32>("n").unwrap_err();
        assert!(err.message.contains("out of range"), "{err}");
    });
    with_root("d = \"5x\"\n", |mut root| {
        let err = root.duration("d").unwrap_err();
        assert!(err.to_string().starts_with("test.hcl:1:5: d: invalid duration"), "{err}");
    });
    with_root("l = \"a\"\n", |mut root| {
        assert!(root.strings("l").is_err());
    });
}

#[test]
fn unknown_keys_are_reported_with_their_block() {
    let text = "task \"redis\" {\n  driver = \"docker\"\n  foo = 1\n  bar {}\n}\n";
    with_root(text, |mut root| {
        let mut task = root.blocks("task").pop().unwrap();
        assert_eq!(task.label().unwrap(), "redis");
        assert_eq!(task.body.string("driver").unwrap().as_deref(), Some("docker"));
        let warnings = task.body.finish_lenient();
        assert_eq!(
            warnings,
            vec![
                "test.hcl:3:3: unsupported argument \"foo\" in task \"redis\"".to_string(),
                "test.hcl:4:3: unsupported block type \"bar\" in task \"redis\"".to_string(),
            ]
        );
    });
    with_root("x = 1\n", |root| {
        let err = root.finish().unwrap_err();
        assert_eq!(err.to_string(), "test.hcl:1:1: unsupported argument \"x\"");
    });
}

#[test]
fn maps_accept_block_attribute_and_hcl1_forms() {
    let text = "env { A = \"1\" }\nenv = { B = 2 }\nmeta {\n  \"x.y\" = \"z\"\n}\n";
    with_root(text, |mut root| {
        let env = root.string_map("env").unwrap().unwrap();
        assert_eq!(env, BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]));
        let meta = root.string_map("meta").unwrap().unwrap();
        assert_eq!(meta, BTreeMap::from([("x.y".into(), "z".into())]));
    });
}

#[test]
fn free_form_blocks_become_arrays() {
    let text = concat!(
        "image = \"redis:7\"\n",
        "args = [\"-c\", 1]\n",
        "port_map { db = 6379 }\n",
        "mount {\n  type = \"bind\"\n}\n",
        "mount {\n  type = \"tmpfs\"\n}\n",
        "labels {\n  \"com.x\" = \"y\"\n}\n",
    );
    with_root(text, |mut root| {
        let config = root.free_form().unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "image": "redis:7",
                "args": ["-c", 1],
                "port_map": [{"db": 6379}],
                "mount": [{"type": "bind"}, {"type": "tmpfs"}],
                "labels": [{"com.x": "y"}],
            })
        );
    });
}

#[test]
fn hcl1_rewrite_keeps_line_numbers() {
    let text = "env {\n  \"A\" = \"1\"\n}\ncount = \"x\"\n";
    with_root(text, |mut root| {
        let err = root.int("count").unwrap_err();
        assert_eq!((err.line, err.column), (4, 9));
    });
    // With an inserted byte (no space before the brace) columns still map back.
    let text = "env{ \"A\" = \"1\" } \ncount = \"x\"\n";
    with_root(text, |mut root| {
        let err = root.int("count").unwrap_err();
        assert_eq!((err.line, err.column), (2, 9));
    });
}

#[test]
fn duplicate_single_blocks_and_attributes_fail() {
    let err = Source::parse("test.hcl", "a = 1\na = 2\n").unwrap_err();
    assert_eq!(err.line, 2);
    with_root("r {}\nr {}\n", |mut root| {
        assert_eq!(root.block("r").err().map(|e| e.line), Some(2));
    });
}
