//! Embeds `sql/indexes/*.sql`, the indexes built concurrently after the migrations
//! (src/pg/indexes.rs), as a list of (file stem, SQL) in version order.

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=sql/indexes");
    let mut files: Vec<_> = match std::fs::read_dir("sql/indexes") {
        Ok(dir) => dir.filter_map(|entry| Some(entry.ok()?.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.retain(|path| path.extension().is_some_and(|ext| ext == "sql"));
    files.sort();
    let entries: String = files
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .expect("a .sql file has a stem")
                .to_string_lossy();
            let full = std::fs::canonicalize(path).expect("a file read from its directory exists");
            format!("({stem:?}, include_str!({full:?})),\n")
        })
        .collect();
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("indexes.rs");
    std::fs::write(out, format!("&[\n{entries}]\n")).expect("OUT_DIR is writable");
}
