//! Every import format (dotenv, JSON, YAML, 1Password, AWS Secrets Manager, Vault, Doppler) and
//! format detection on arbitrary text; whatever imports is exported to every target, and a
//! dotenv export reads back to the same entries (the round trip formats/README.md promises).

#![no_main]

use libfuzzer_sys::fuzz_target;
use zopp_formats::{
    detect, parse, render, ExportFormat, ExportOptions, ImportFormat, ImportOptions,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = detect(text);
    let options = ImportOptions::new("fuzz");
    let export = ExportOptions {
        k8s_name: Some("fuzz"),
        k8s_namespace: Some("default"),
    };
    for format in ImportFormat::ALL {
        let Ok(entries) = parse(text, format, &options) else {
            continue;
        };
        for target in ExportFormat::ALL {
            let _ = render(&entries, target, &export);
        }
        if let Ok(dotenv) = render(&entries, ExportFormat::Dotenv, &export) {
            let back = parse(&dotenv, ImportFormat::Dotenv, &options)
                .expect("zopp's dotenv export reads back");
            assert_eq!(back.len(), entries.len());
            for (a, b) in back.iter().zip(&entries) {
                assert_eq!(a.name, b.name);
                assert_eq!(a.value.expose_secret(), b.value.expose_secret());
            }
        }
    }
    let aws_key = ImportOptions {
        source: "fuzz",
        key: Some("API_KEY"),
    };
    let _ = parse(text, ImportFormat::AwsSecretsManager, &aws_key);
});
