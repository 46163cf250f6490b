//! The config fixtures under tests/configs: every valid one passes the parser, every invalid one
//! fails it with a problem at the JSON path that tests/configs/invalid/expected.json names. The
//! schema side of the same files is checked by tests/test_schema.py.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use portcullis::Config;

fn json_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json") && p.file_stem().unwrap() != "expected"
        })
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn valid_configs_pass_the_parser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = json_files(&root.join("tests/configs/valid"));
    files.push((
        "routes.json".into(),
        fs::read_to_string(root.join("routes.json")).unwrap(),
    ));
    assert!(files.len() >= 3);
    for (name, text) in files {
        if let Err(e) = Config::from_json(&text) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn invalid_configs_fail_the_parser_at_the_expected_path() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/invalid");
    let expected: BTreeMap<String, String> =
        serde_json::from_str(&fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let files = json_files(&dir);
    assert_eq!(
        files.len(),
        expected.len(),
        "every invalid fixture needs an expected path, and back"
    );
    for (name, text) in files {
        let want = expected
            .get(&name)
            .unwrap_or_else(|| panic!("{name}: no expected path"));
        match Config::from_json(&text) {
            Ok(_) => panic!("{name}: accepted"),
            Err(errors) => assert!(
                errors.0.iter().any(|e| &e.path == want),
                "{name}: expected a problem at {want}, got {errors}"
            ),
        }
    }
}
