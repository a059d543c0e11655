//! Provenance and signatures: an SLSA v1.0 provenance (an in-toto Statement v1) in a DSSE
//! envelope, and a cosign-compatible key-based signature (the "simple signing" payload,
//! ECDSA P-256 / SHA-256, DER, base64), attached under cosign's tag scheme:
//! `sha256-<hex>.sig` and `sha256-<hex>.att` in each repository pushed to, and as OCI 1.1
//! referrers of the image (see [`attach`]). `cosign verify --key` and `cosign
//! verify-attestation --key` read them; `openssl dgst -sha256 -verify` checks the signature of
//! the payload blob.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

use super::build::{Base, BuildRequest};
use super::image::{Descriptor, Index, Manifest, RootFs, media};
use super::reference::Reference;
use super::registry::{Blob, Session};
use super::{Log, OciError};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// An ECDSA P-256 signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey {
    /// Reads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as `openssl genpkey -algorithm EC
    /// -pkeyopt ec_paramgen_curve:P-256` writes).
    pub fn from_pem(pem: &str) -> Result<SigningKey, OciError> {
        if pem.contains("ENCRYPTED") {
            return Err(OciError::Sign(
                "the signing key is encrypted (a cosign key?): give an unencrypted PKCS#8 P-256 key (`openssl pkcs8 -topk8 -nocrypt`)"
                    .into(),
            ));
        }
        if pem.contains("BEGIN EC PRIVATE KEY") {
            return Err(OciError::Sign(
                "the signing key is SEC1 (`EC PRIVATE KEY`): convert it with `openssl pkcs8 -topk8 -nocrypt -in key.pem`".into(),
            ));
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| OciError::Sign(format!("the signing key is not a PEM `PRIVATE KEY` ({e})")))?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der(), &rng)
            .map_err(|e| OciError::Sign(format!("the signing key is not an ECDSA P-256 key ({e})")))?;
        Ok(SigningKey { pair, rng })
    }

    /// A DER ECDSA signature of SHA-256(`message`).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, OciError> {
        Ok(self.pair.sign(&self.rng, message).map_err(|_| OciError::Sign("ECDSA signing failed".into()))?.as_ref().to_vec())
    }

    /// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), for `cosign verify --key`.
    pub fn public_pem(&self) -> String {
        // SPKI = SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING point }.
        let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").expect("constant");
        der.extend_from_slice(self.pair.public_key().as_ref());
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64")).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
    }
}

/// The SLSA v1.0 provenance of a build, as an in-toto Statement v1.
pub fn provenance(
    req: &BuildRequest,
    dests: &[Reference],
    digest: &str,
    bases: &[Base],
    started: jiff::Timestamp,
    finished: jiff::Timestamp,
) -> serde_json::Value {
    let hex = digest.trim_start_matches("sha256:");
    let mut subjects: Vec<serde_json::Value> = Vec::new();
    for d in dests {
        let name = d.name();
        if !subjects.iter().any(|s| s["name"] == name.as_str()) {
            subjects.push(serde_json::json!({"name": name, "digest": {"sha256": hex}}));
        }
    }
    let p = &req.provenance;
    let mut deps = Vec::new();
    if let (Some(source), Some(rev)) = (&req.source, &req.revision) {
        deps.push(serde_json::json!({"uri": format!("git+{source}@{rev}"), "digest": {"gitCommit": rev}}));
    }
    if let Some((path, sha)) = &p.pipeline_file {
        deps.push(serde_json::json!({"uri": path, "digest": {"sha256": sha}}));
    }
    for b in bases {
        deps.push(
            serde_json::json!({"uri": format!("oci://{}", b.pinned()), "digest": {"sha256": b.digest.trim_start_matches("sha256:")}}),
        );
    }
    let args: BTreeMap<&str, &str> = req.build_args.iter().map(|(k, _)| (k.as_str(), "(set)")).collect();
    serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": SLSA_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://piste.dev/image-build/v1",
                "externalParameters": {
                    "inputs": p.inputs,
                    "dockerfile": req.dockerfile.display().to_string(),
                    "destinations": req.destinations,
                    "target": req.target,
                    "buildArgs": args,
                    "sourceDateEpoch": req.source_date_epoch,
                },
                "internalParameters": {"job": p.job, "runner": p.runner},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": p.builder_id},
                "metadata": {
                    "invocationId": p.invocation_id,
                    "startedOn": p.started_on.clone().unwrap_or_else(|| started.to_string()),
                    "finishedOn": finished.to_string(),
                },
            },
        },
    })
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope of `statement`, signed with `key`.
pub fn envelope(statement: &serde_json::Value, key: &SigningKey) -> Result<serde_json::Value, OciError> {
    let payload = serde_json::to_vec(statement).expect("statements serialise");
    let sig = key.sign(&pae(IN_TOTO, &payload))?;
    Ok(serde_json::json!({
        "payloadType": IN_TOTO,
        "payload": STANDARD.encode(&payload),
        "signatures": [{"keyid": "", "sig": STANDARD.encode(sig)}],
    }))
}

/// cosign's simple signing payload for `repo@digest`.
pub fn simple_signing_payload(name: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": name},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("payloads serialise")
}

/// The `artifactType` of the signature manifest (cosign's, for OCI 1.1 referrers).
pub const SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// Pushes the `.sig` and `.att` manifests of `digest` to `repo` under cosign's tags, each with
/// `subject` (the image) and an `artifactType`. A registry with the OCI referrers API indexes
/// them from `subject` as they are pushed (it answers `OCI-Subject`); for one without it (such
/// as Debian's docker-registry 2.8), they are also listed in the `sha256-<hex>` image index,
/// OCI distribution 1.1's referrers tag schema, so that referrers clients find them there.
#[allow(clippy::too_many_arguments)]
pub async fn attach(
    session: &Session,
    repo: &str,
    digest: &str,
    manifest_size: u64,
    key: &SigningKey,
    statement: &serde_json::Value,
    epoch: u64,
    log: &Log,
) -> Result<(), OciError> {
    let host = session.registry().host().to_owned();
    let name = format!("{host}/{repo}");
    let payload = simple_signing_payload(&name, digest);
    let sig = STANDARD.encode(key.sign(&payload)?);
    let env = serde_json::to_vec(&envelope(statement, key)?).expect("envelopes serialise");
    let tag = digest.replace(':', "-");
    let subject = Descriptor {
        media_type: media::OCI_MANIFEST.into(),
        digest: digest.to_owned(),
        size: manifest_size,
        platform: None,
        artifact_type: None,
        annotations: BTreeMap::new(),
    };
    let created = jiff::Timestamp::from_second(epoch as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH).to_string();
    let mut referrers: Vec<Descriptor> = Vec::new();
    let mut indexed = true;
    for (suffix, blob, layer_type, artifact, annotations) in [
        ("sig", payload, SIMPLE_SIGNING, SIGNATURE_ARTIFACT, BTreeMap::from([(SIGNATURE_ANNOTATION.to_owned(), sig.clone())])),
        ("att", env, DSSE, DSSE, BTreeMap::from([("predicateType".to_owned(), SLSA_V1.to_owned())])),
    ] {
        let layer = Blob::memory(blob);
        let config = serde_json::json!({
            "architecture": "", "os": "", "created": created,
            "config": {},
            "rootfs": RootFs { kind: "layers".into(), diff_ids: vec![layer.digest.clone()] },
        });
        let config = Blob::memory(serde_json::to_vec(&config).expect("configs serialise"));
        session.push_blob(repo, &layer, None).await?;
        session.push_blob(repo, &config, None).await?;
        let mut manifest = Manifest::oci(
            Descriptor {
                media_type: media::OCI_CONFIG.into(),
                digest: config.digest.clone(),
                size: config.size,
                platform: None,
                artifact_type: None,
                annotations: BTreeMap::new(),
            },
            vec![Descriptor {
                media_type: layer_type.into(),
                digest: layer.digest.clone(),
                size: layer.size,
                platform: None,
                artifact_type: None,
                annotations,
            }],
        );
        manifest.subject = Some(subject.clone());
        manifest.artifact_type = Some(artifact.to_owned());
        let bytes = manifest.to_bytes();
        let (d, subject_indexed) = session.put_manifest_referring(repo, &format!("{tag}.{suffix}"), media::OCI_MANIFEST, &bytes).await?;
        indexed &= subject_indexed;
        log.line(format!(
            "  attached {name}:{tag}.{suffix} ({})",
            if suffix == "sig" { "cosign signature" } else { "SLSA v1.0 provenance, DSSE" }
        ))
        .await;
        referrers.push(Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: d,
            size: bytes.len() as u64,
            platform: None,
            artifact_type: Some(artifact.to_owned()),
            annotations: BTreeMap::new(),
        });
    }
    if indexed {
        log.line("  the registry indexes them as referrers of the image (OCI referrers API)").await;
        return Ok(());
    }
    // The referrers tag schema: the `sha256-<hex>` index lists the manifests whose subject is
    // the image. One that is not an index is someone else's tag: left alone.
    let mut index = match session.manifest_digest(repo, &tag).await? {
        None => Index { schema_version: 2, media_type: Some(media::OCI_INDEX.into()), manifests: Vec::new() },
        Some(_) => {
            let fetched = session.get_manifest(repo, &tag).await?;
            match serde_json::from_slice::<Index>(&fetched.bytes) {
                Ok(index) if fetched.media_type.starts_with(media::OCI_INDEX) => index,
                _ => {
                    log.line(format!("  `{name}:{tag}` is not a referrers index (some other image?): it is left as it is")).await;
                    return Ok(());
                }
            }
        }
    };
    let before = index.manifests.len();
    for r in referrers {
        if !index.manifests.iter().any(|m| m.digest == r.digest) {
            index.manifests.push(r);
        }
    }
    if index.manifests.len() != before {
        let bytes = serde_json::to_vec(&index).expect("indexes serialise");
        session.put_manifest(repo, &tag, media::OCI_INDEX, &bytes).await?;
    }
    log.line(format!("  no referrers API at {host}: listed in the referrers index `{name}:{tag}` (OCI 1.1's fallback tag)")).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(pae("a/b", b"hi"), b"DSSEv1 3 a/b 2 hi".to_vec());
    }

    #[test]
    fn rejects_keys_it_cannot_use_with_a_hint() {
        let e = SigningKey::from_pem("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n").err().unwrap();
        assert!(e.to_string().contains("openssl pkcs8"), "{e}");
        assert!(SigningKey::from_pem("not a key").is_err());
    }
}
