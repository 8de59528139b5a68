//! What the build embeds besides the code: `sql/indexes/*.sql`, the indexes built
//! concurrently after the migrations (src/pg/indexes.rs), as a list of (file stem, SQL)
//! in version order; and Swagger UI for `/docs` (src/http/docs.rs), taken from the
//! utoipa-swagger-ui-vendored crate (so Cargo.lock pins it by version and checksum, and the
//! build itself reaches no network), each file gzipped.

use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    swagger_ui(&out);
    // sql/, not sql/indexes: a path that does not exist would run this script on every build.
    println!("cargo::rerun-if-changed=sql");
    println!("cargo::rerun-if-changed=build.rs");
    let mut files: Vec<_> = match std::fs::read_dir("sql/indexes") {
        Ok(dir) => dir.filter_map(|entry| Some(entry.ok()?.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.retain(|path| path.extension().is_some_and(|ext| ext == "sql"));
    files.sort();
    let entries: String = files
        .iter()
        .map(|path| {
            let stem = path.file_stem().expect("a .sql file has a stem").to_string_lossy();
            let full = std::fs::canonicalize(path).expect("a file read from its directory exists");
            format!("({stem:?}, include_str!({full:?})),\n")
        })
        .collect();
    std::fs::write(out.join("indexes.rs"), format!("&[\n{entries}]\n"))
        .expect("OUT_DIR is writable");
}

/// Swagger UI's files, from the zip archive utoipa-swagger-ui-vendored holds, as
/// `OUT_DIR/<file>.gz`. A zip member is a raw deflate stream with its CRC-32 and size, so a
/// gzip header and trailer around it make the gzip file, with nothing decompressed.
fn swagger_ui(out: &Path) {
    let zip = utoipa_swagger_ui_vendored::SWAGGER_UI_VENDORED;
    let u16_at = |at: usize| u16::from_le_bytes([zip[at], zip[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(zip[at..at + 4].try_into().unwrap()) as usize;
    // The end of central directory record: the entry count, and where the directory starts.
    let end = zip.windows(4).rposition(|w| w == b"PK\x05\x06").expect("a zip archive");
    let mut entry = u32_at(end + 16);
    let mut wanted = vec!["dist/swagger-ui-bundle.js", "dist/swagger-ui.css", "LICENSE"];
    for _ in 0..u16_at(end + 10) {
        let name_end = entry + 46 + u16_at(entry + 28);
        let name = std::str::from_utf8(&zip[entry + 46..name_end]).expect("a UTF-8 name");
        if let Some(at) =
            wanted.iter().position(|file| name.split_once('/').unwrap_or_default().1 == *file)
        {
            assert_eq!(u16_at(entry + 10), 8, "{name} is deflated");
            let (crc, size, local) =
                (&zip[entry + 16..entry + 20], u32_at(entry + 20), u32_at(entry + 42));
            let data = local + 30 + u16_at(local + 26) + u16_at(local + 28);
            let mut gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff];
            gzip.extend([&zip[data..data + size], crc, &zip[entry + 24..entry + 28]].concat());
            let file = wanted.remove(at).rsplit('/').next().unwrap_or_default();
            std::fs::write(out.join(format!("{file}.gz")), gzip).expect("OUT_DIR is writable");
        }
        entry = name_end + u16_at(entry + 30) + u16_at(entry + 32);
    }
    assert!(wanted.is_empty(), "not in the archive: {wanted:?}");
}
