//! What the build embeds besides the code: `sql/indexes/*.sql`, the indexes built
//! concurrently after the migrations (src/pg/indexes.rs), as a list of (file stem, SQL)
//! in version order; and Swagger UI for `/docs` (src/http/docs.rs), from the npm registry,
//! pinned by version and SHA-512, gzipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// swagger-ui-dist on the npm registry, and the SHA-512 of its tarball (npm's `integrity`).
const SWAGGER_UI: &str = "https://registry.npmjs.org/swagger-ui-dist/-/swagger-ui-dist-5.35.0.tgz";
const SWAGGER_UI_SHA512: &str = "534eaba4cb56f55dd73c638179a993512af4674f63317e0826e00da44fc465b0\
    21c341bc0a0c2bcd4e18997927fe1d3008336c5dd19aad334d1c2dec53cc9551";

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    swagger_ui(&out);
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
    std::fs::write(out.join("indexes.rs"), format!("&[\n{entries}]\n"))
        .expect("OUT_DIR is writable");
}

/// Fetches swagger-ui-dist once (`SWAGGER_UI_TGZ` may name a copy instead), checks its
/// SHA-512, and leaves the two files `/docs` serves in `out`, gzipped.
fn swagger_ui(out: &Path) {
    println!("cargo::rerun-if-env-changed=SWAGGER_UI_TGZ");
    let tgz = match std::env::var("SWAGGER_UI_TGZ") {
        Ok(path) => PathBuf::from(path),
        Err(_) => out.join("swagger-ui-dist.tgz"),
    };
    if !tgz.exists() {
        run(Command::new("curl")
            .args(["-fsSL", "--retry", "3", "-o"])
            .arg(&tgz)
            .arg(SWAGGER_UI));
    }
    let sum = run(Command::new("sha512sum").arg(&tgz));
    if !sum.starts_with(SWAGGER_UI_SHA512) {
        let _ = std::fs::remove_file(out.join("swagger-ui-dist.tgz"));
        panic!(
            "{} is not the swagger-ui-dist the build pins (SHA-512 {sum})",
            tgz.display()
        );
    }
    for file in ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"] {
        let member = format!("package/{file}");
        let text = run(Command::new("tar").arg("-xzOf").arg(&tgz).arg(&member));
        std::fs::write(out.join(file), text).expect("OUT_DIR is writable");
        let gzipped = Command::new("gzip")
            .args(["-9", "-n", "-f"])
            .arg(out.join(file))
            .status();
        assert!(gzipped.is_ok_and(|status| status.success()), "gzip {file}");
    }
}

/// Runs `command`, and gives what it printed; the build stops, saying why, if it fails.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
