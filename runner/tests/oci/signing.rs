//! Provenance and signatures, checked with openssl against what the registry serves.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use runner::oci::build::build_and_push;

use super::support::{Auth, Collected, Registry, openssl, request, write_files};

async fn get(reg: &Registry, path: &str) -> Vec<u8> {
    let r = reqwest::Client::new()
        .get(format!("http://{}/v2/{path}", reg.host))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_and_the_provenance_verify_with_openssl() {
    let reg = Registry::start(Auth::None).await;
    let root = tempfile::tempdir().unwrap();
    let keys = root.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (key, public) = (keys.join("key.pem"), keys.join("pub.pem"));
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], &[("-out", &key)]);
    openssl(&["pkey", "-pubout"], &[("-in", &key), ("-out", &public)]);
    let ctx = root.path().join("ctx");
    write_files(&ctx, &[("Dockerfile", "FROM scratch\nCOPY app.txt /\n", 0o644), ("app.txt", "app\n", 0o644)]);
    let log = Collected::new();
    let mut req = request(&reg, &ctx, &["app/signed:1"]);
    req.signing_key = Some(std::fs::read_to_string(&key).unwrap());
    req.provenance.job = "package".into();
    req.provenance.pipeline_file = Some((".gitlab-ci.yml".into(), "ab".repeat(32)));
    let out = build_and_push(&req, &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    let text = log.text().await;
    assert!(out.signed);
    let tag = out.digest.replace(':', "-");
    assert!(text.contains(&format!("{tag}.sig")) && text.contains(&format!("{tag}.att")), "{text}");

    // The cosign signature: a simple-signing payload naming the pushed digest.
    let sig_manifest: serde_json::Value = serde_json::from_slice(&get(&reg, &format!("app/signed/manifests/{tag}.sig")).await).unwrap();
    let layer = &sig_manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
    assert_eq!(sig_manifest["subject"]["digest"], out.digest.as_str());
    let payload = get(&reg, &format!("app/signed/blobs/{}", layer["digest"].as_str().unwrap())).await;
    let parsed: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(parsed["critical"]["image"]["docker-manifest-digest"], out.digest.as_str());
    assert_eq!(parsed["critical"]["identity"]["docker-reference"], format!("{}/app/signed", reg.host));
    let sig = STANDARD.decode(layer["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap()).unwrap();
    let (payload_file, sig_file) = (root.path().join("payload.json"), root.path().join("payload.sig"));
    std::fs::write(&payload_file, &payload).unwrap();
    std::fs::write(&sig_file, &sig).unwrap();
    let verified = openssl(&["dgst", "-sha256"], &[("-verify", &public), ("-signature", &sig_file), ("", &payload_file)]);
    assert_eq!(verified.trim(), "Verified OK");

    // The attestation: a DSSE envelope of an in-toto statement whose subject is the digest.
    let att: serde_json::Value = serde_json::from_slice(&get(&reg, &format!("app/signed/manifests/{tag}.att")).await).unwrap();
    assert_eq!(att["layers"][0]["mediaType"], "application/vnd.dsse.envelope.v1+json");
    assert_eq!(att["layers"][0]["annotations"]["predicateType"], "https://slsa.dev/provenance/v1");
    let envelope: serde_json::Value =
        serde_json::from_slice(&get(&reg, &format!("app/signed/blobs/{}", att["layers"][0]["digest"].as_str().unwrap())).await).unwrap();
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
    let statement_bytes = STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&statement_bytes).unwrap();
    assert_eq!(statement, out.provenance);
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], out.digest.trim_start_matches("sha256:"));
    assert_eq!(statement["subject"][0]["name"], format!("{}/app/signed", reg.host));
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert_eq!(deps[0]["digest"]["gitCommit"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(deps[1]["uri"], ".gitlab-ci.yml");
    assert_eq!(statement["predicate"]["buildDefinition"]["internalParameters"]["job"], "package");
    let mut pae = format!("DSSEv1 28 application/vnd.in-toto+json {} ", statement_bytes.len()).into_bytes();
    pae.extend_from_slice(&statement_bytes);
    let (pae_file, dsse_sig) = (root.path().join("pae"), root.path().join("pae.sig"));
    std::fs::write(&pae_file, pae).unwrap();
    std::fs::write(&dsse_sig, STANDARD.decode(envelope["signatures"][0]["sig"].as_str().unwrap()).unwrap()).unwrap();
    let verified = openssl(&["dgst", "-sha256"], &[("-verify", &public), ("-signature", &dsse_sig), ("", &pae_file)]);
    assert_eq!(verified.trim(), "Verified OK");

    // Debian's registry has no referrers API: both are listed in the `sha256-<hex>` index, OCI
    // 1.1's referrers tag schema, with their artifact types.
    assert!(text.contains(&format!("listed in the referrers index `{}/app/signed:{tag}`", reg.host)), "{text}");
    let index: serde_json::Value = serde_json::from_slice(&get(&reg, &format!("app/signed/manifests/{tag}")).await).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let listed: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["digest"].as_str().unwrap().to_owned(), m["artifactType"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        listed,
        [
            (reg.digest_of(&format!("app/signed:{tag}.sig")), "application/vnd.dev.cosign.artifact.sig.v1+json".to_owned()),
            (reg.digest_of(&format!("app/signed:{tag}.att")), "application/vnd.dsse.envelope.v1+json".to_owned()),
        ]
    );
    assert_eq!(sig_manifest["artifactType"], "application/vnd.dev.cosign.artifact.sig.v1+json");
}

/// A registry with the referrers API (it answers `OCI-Subject`; played here by a proxy in front
/// of Debian's registry, which has none) indexes the signature itself: no fallback index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_the_referrers_api_gets_no_fallback_index() {
    let reg = Registry::start(Auth::None).await;
    let proxy = super::support::FlakyProxy::start_with(&reg.host, 0, true);
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("key.pem");
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], &[("-out", &key)]);
    let ctx = root.path().join("ctx");
    write_files(&ctx, &[("Dockerfile", "FROM scratch\nCOPY app.txt /\n", 0o644), ("app.txt", "app\n", 0o644)]);
    let log = Collected::new();
    let mut req = request(&reg, &ctx, &[]);
    req.destinations = vec![format!("{}/app/referred:1", proxy.host)];
    req.signing_key = Some(std::fs::read_to_string(&key).unwrap());
    let out = build_and_push(&req, &log.writer).await.unwrap_or_else(|e| panic!("{e}"));
    let text = log.text().await;
    assert!(text.contains("the registry indexes them as referrers of the image (OCI referrers API)"), "{text}");
    let tag = out.digest.replace(':', "-");
    let mut tags = reg.tags("app/referred");
    tags.sort();
    assert_eq!(tags, ["1".to_owned(), format!("{tag}.att"), format!("{tag}.sig")], "no `{tag}` fallback index");
}
