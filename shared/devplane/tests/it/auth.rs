use crate::support::*;

#[tokio::test]
async fn missing_and_unknown_credentials_are_401_with_error_body() {
    let env = start().await;
    let r = env.http.get(env.work_path("/poll")).send().await.unwrap();
    let body = error_body(r, 401, "authentication_error").await;
    assert!(body["error"]["details"]["error_code"].is_string());
    let r = env
        .get(&env.work_path("/poll"), "sk-ant-oat01-nope")
        .send()
        .await
        .unwrap();
    error_body(r, 401, "authentication_error").await;
}

#[tokio::test]
async fn credentials_are_classified_by_value_not_header() {
    let env = start().await;
    let api = env.dp.api_key().to_owned();
    // API key as x-api-key and as Bearer both work on stats.
    let r = env
        .http
        .get(env.work_path("/stats"))
        .header("x-api-key", &api)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .get(&env.work_path("/stats"), &api)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An environment key sent as x-api-key is still an environment key: poll accepts it.
    let r = env
        .http
        .get(env.work_path("/poll"))
        .header("x-api-key", env.env_key())
        .header("x-stainless-helper", "environments-work-poller")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn endpoint_credential_matrix() {
    let env = start().await;
    let api = env.dp.api_key().to_owned();
    let (session, work, token) = env.claimed().await;
    // poll and list reject the API key; list rejects a sessions token.
    error_body(
        env.get(&env.work_path("/poll"), &api).send().await.unwrap(),
        403,
        "permission_error",
    )
    .await;
    error_body(
        env.get(&env.work_path(""), &api).send().await.unwrap(),
        403,
        "permission_error",
    )
    .await;
    error_body(
        env.get(&env.work_path(""), &token).send().await.unwrap(),
        403,
        "permission_error",
    )
    .await;
    assert_eq!(
        env.get(&env.work_path(""), &env.env_key())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // retrieve is API-key only.
    let item = env.work_path(&format!("/{work}"));
    assert_eq!(env.get(&item, &api).send().await.unwrap().status(), 200);
    error_body(
        env.get(&item, &env.env_key()).send().await.unwrap(),
        403,
        "permission_error",
    )
    .await;
    error_body(
        env.get(&item, &token).send().await.unwrap(),
        403,
        "permission_error",
    )
    .await;
    // Sessions accept all three, and `?beta=true` is ignored.
    for cred in [&api, &env.env_key(), &token] {
        let r = env
            .get(&env.url(&format!("/v1/sessions/{session}?beta=true")), cred)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A sessions token is bound to its session and its work item.
    let (other_session, other_work, _) = env.claimed().await;
    error_body(
        env.get(&env.url(&format!("/v1/sessions/{other_session}")), &token)
            .send()
            .await
            .unwrap(),
        403,
        "permission_error",
    )
    .await;
    let r = env.heartbeat(&other_work, &token, "NO_HEARTBEAT").await;
    error_body(r, 403, "permission_error").await;
    // An environment key of another environment is not valid here.
    let other_key = env.dp.add_environment("env_other");
    error_body(
        env.get(&env.work_path("/poll"), &other_key)
            .send()
            .await
            .unwrap(),
        403,
        "permission_error",
    )
    .await;
}

#[tokio::test]
async fn session_routes_need_the_beta_header_and_accept_any_version() {
    let env = start().await;
    let session = env.session();
    let url = env.url(&format!("/v1/sessions/{session}"));
    let r = env
        .http
        .get(&url)
        .bearer_auth(env.env_key())
        .send()
        .await
        .unwrap();
    error_body(r, 404, "not_found_error").await;
    let r = env
        .http
        .get(&url)
        .bearer_auth(env.env_key())
        .header("anthropic-beta", format!("other-beta,{BETA}"))
        .header("anthropic-version", "2026-10-21")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["id"], session.as_str());
    assert_eq!(body["type"], "session");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_the_error_body() {
    let env = start().await;
    error_body(
        env.get(&env.url("/v1/nothing"), &env.env_key())
            .send()
            .await
            .unwrap(),
        404,
        "not_found_error",
    )
    .await;
    let r = env
        .http
        .delete(env.work_path("/poll"))
        .bearer_auth(env.env_key())
        .send()
        .await
        .unwrap();
    error_body(r, 405, "invalid_request_error").await;
}
