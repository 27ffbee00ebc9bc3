use std::io::{Cursor, Read};

use hands_devplane::{Config, SessionSpec};
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn latest_resolves_and_zip_content_keeps_exec_bits() {
    let env = start().await;
    let v: Value = env
        .get(
            &env.url("/v1/skills/skill_hello/versions/latest"),
            &env.env_key(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["type"], "skill_version");
    assert_eq!(v["name"], "hello");
    let id = v["id"].as_str().unwrap();
    let r = env
        .get(
            &env.url(&format!("/v1/skills/skill_hello/versions/{id}/content")),
            &env.env_key(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/zip");
    let bytes = r.bytes().await.unwrap();
    let mut z = zip::ZipArchive::new(Cursor::new(bytes.to_vec())).unwrap();
    let f = z.by_name("hello/scripts/greet.sh").unwrap();
    assert_eq!(f.unix_mode().unwrap() & 0o111, 0o111);
}

#[tokio::test]
async fn tar_gz_and_hostile_archives_are_served() {
    let env = start().await;
    let get = |skill: &str| {
        env.get(
            &env.url(&format!("/v1/skills/{skill}/versions/latest/content")),
            &env.env_key(),
        )
        .send()
    };
    let gz = get("skill_tarball").await.unwrap().bytes().await.unwrap();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(Cursor::new(gz.to_vec()))
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut a = tar::Archive::new(Cursor::new(tar_bytes));
    let run = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().ends_with("bin/run"))
        .unwrap();
    assert_eq!(run.header().mode().unwrap() & 0o111, 0o111);

    let gz = get("skill_evil_symlink")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(Cursor::new(gz.to_vec()))
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut a = tar::Archive::new(Cursor::new(tar_bytes));
    assert!(
        a.entries()
            .unwrap()
            .any(|e| e.unwrap().header().entry_type() == tar::EntryType::Symlink)
    );
    let dotdot = get("skill_evil_dotdot")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let z = zip::ZipArchive::new(Cursor::new(dotdot.to_vec())).unwrap();
    assert!(z.file_names().any(|n| n.starts_with("../")));
    let r = get("skill_nope").await.unwrap();
    error_body(r, 404, "not_found_error").await;
}

#[tokio::test]
async fn sessions_token_acceptance_is_a_switch() {
    let env = start_with(Config {
        skills_accept_sessions_token: false,
        ..fast_config()
    })
    .await;
    let (_, _, token) = env.claimed().await;
    let url = env.url("/v1/skills/skill_hello/versions/latest");
    error_body(
        env.get(&url, &token).send().await.unwrap(),
        403,
        "permission_error",
    )
    .await;
    let env = start().await;
    let (_, _, token) = env.claimed().await;
    assert_eq!(
        env.get(&env.url("/v1/skills/skill_hello/versions/latest"), &token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sessions_list_their_skills_and_unknown_skills_are_refused() {
    let env = start().await;
    let spec: SessionSpec =
        serde_json::from_value(serde_json::json!({"skills":[{"skill_id":"skill_hello"}]})).unwrap();
    let session = env.dp.create_session(&spec).unwrap();
    let s: Value = env
        .get(&env.url(&format!("/v1/sessions/{session}")), &env.env_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["agent"]["skills"][0]["skill_id"], "skill_hello");
    assert_eq!(s["agent"]["skills"][0]["version"], "latest");
    let bad: SessionSpec =
        serde_json::from_value(serde_json::json!({"skills":[{"skill_id":"skill_zzz"}]})).unwrap();
    assert!(env.dp.create_session(&bad).is_err());
}
