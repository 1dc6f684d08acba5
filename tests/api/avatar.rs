//! Avatars over real GraphQL multipart requests, served back over HTTP, on
//! both backends.

use std::io::{Cursor, Write as _};

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::{json, Value};

use crate::helpers::*;

const UPLOAD: &str = "mutation($file: Upload!) {
  uploadAvatar(file: $file) {
    __typename
    ... on UploadAvatarSuccess { user { id avatarUrl original: avatarUrl(size: ORIGINAL) updatedAt } }
    ... on ValidationFailed { fields { field code message } }
    ... on UserError { code message }
  }
}";

const AVATAR: &str = "{ me { avatarUrl original: avatarUrl(size: ORIGINAL) } }";

/// A GraphQL multipart request (operations, map, one file part); the
/// status and the JSON answer.
async fn upload(
    app: &TestApp,
    access: Option<&str>,
    filename: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let operations = json!({ "query": UPLOAD, "variables": { "file": null } });
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(filename.to_owned())
        .mime_str(content_type)
        .expect("mime");
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({ "0": ["variables.file"] }).to_string())
        .part("0", part);
    let mut request = app.client.post(app.url("/graphql")).multipart(form);
    if let Some(access) = access {
        request = request.bearer_auth(access);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON answer");
    assert_no_secrets(&body);
    (status, body)
}

/// The `uploadAvatar` result of an upload that must reach the resolver.
async fn upload_result(
    app: &TestApp,
    access: &str,
    filename: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> Value {
    let (status, body) = upload(app, Some(access), filename, content_type, bytes).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["uploadAvatar"].clone()
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut out), format)
        .expect("encode");
    out
}

fn photo(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    }))
}

/// A real 20000x20000 PNG: 400 million pixels (1.6 GB as RGBA) in a file
/// of a few dozen kilobytes.
fn png_bomb() -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 20_000, 20_000);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    let mut writer = encoder.write_header().expect("header");
    let mut stream = writer.stream_writer().expect("stream");
    let row = vec![0u8; 20_000 / 8];
    for _ in 0..20_000 {
        stream.write_all(&row).expect("row");
    }
    stream.finish().expect("finish");
    writer.finish().expect("finish");
    out
}

/// GETs a URL authql gave out (relative); status, content type, bytes.
async fn fetch(app: &TestApp, url: &str) -> (u16, String, Vec<u8>, reqwest::header::HeaderMap) {
    let response = app.client.get(app.url(url)).send().await.expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response.bytes().await.expect("body").to_vec();
    (status, content_type, bytes, headers)
}

fn url(value: &Value) -> String {
    value.as_str().expect("a URL").to_owned()
}

async fn uploads_are_re_encoded_and_served_with_long_caching(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_up("painter").await;
    let access = signed["accessToken"].as_str().expect("token").to_owned();
    let id = signed["user"]["id"].as_str().expect("id").to_owned();
    let me = app.gql_as(Some(&access), AVATAR, json!({})).await;
    assert_eq!(me["data"]["me"]["avatarUrl"], Value::Null, "{me}");

    // An opaque PNG: kept as JPEG, 256x256 and the whole picture.
    let result = upload_result(
        &app,
        &access,
        "me.png",
        "image/png",
        encoded(&photo(600, 400), ImageFormat::Png),
    )
    .await;
    assert_eq!(result["__typename"], "UploadAvatarSuccess", "{result}");
    let small_url = url(&result["user"]["avatarUrl"]);
    let original_url = url(&result["user"]["original"]);
    assert!(
        small_url.starts_with(&format!("/avatars/{id}-")),
        "{small_url}"
    );
    assert_eq!(original_url, format!("{small_url}?size=original"));
    let (status, content_type, bytes, headers) = fetch(&app, &small_url).await;
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    let small = image::load_from_memory(&bytes).expect("decodes");
    assert_eq!((small.width(), small.height()), (256, 256));
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    let again = app
        .client
        .get(app.url(&small_url))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 304);
    let (_, _, bytes, _) = fetch(&app, &original_url).await;
    let original = image::load_from_memory(&bytes).expect("decodes");
    assert_eq!((original.width(), original.height()), (600, 400));
    let me = app.gql_as(Some(&access), AVATAR, json!({})).await;
    assert_eq!(me["data"]["me"]["avatarUrl"], small_url.as_str());

    // A large JPEG is capped at 1024 a side; the old version's URL is gone.
    let result = upload_result(
        &app,
        &access,
        "holiday.jpg",
        "image/jpeg",
        encoded(&photo(2000, 1500), ImageFormat::Jpeg),
    )
    .await;
    let jpeg_url = url(&result["user"]["original"]);
    let (status, content_type, bytes, _) = fetch(&app, &jpeg_url).await;
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    let original = image::load_from_memory(&bytes).expect("decodes");
    assert_eq!((original.width(), original.height()), (1024, 768));
    let (status, _, body, _) = fetch(&app, &small_url).await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("JSON")["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );

    // Transparency stays PNG (here a WebP with alpha).
    let logo = DynamicImage::ImageRgba8(RgbaImage::from_pixel(300, 300, Rgba([10, 20, 30, 0])));
    let result = upload_result(
        &app,
        &access,
        "logo.webp",
        "image/webp",
        encoded(&logo, ImageFormat::WebP),
    )
    .await;
    let (_, content_type, bytes, _) = fetch(&app, &url(&result["user"]["avatarUrl"])).await;
    assert_eq!(content_type, "image/png");
    let small = image::load_from_memory(&bytes).expect("decodes");
    assert!(small.color().has_alpha());

    // Removed: null again, the URL answers 404; removing again is fine.
    let removed_url = url(&result["user"]["avatarUrl"]);
    for _ in 0..2 {
        let body = app
            .gql_as(
                Some(&access),
                "mutation { removeAvatar { __typename ... on RemoveAvatarSuccess { user { avatarUrl } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            body["data"]["removeAvatar"]["user"]["avatarUrl"],
            Value::Null,
            "{body}"
        );
    }
    assert_eq!(fetch(&app, &removed_url).await.0, 404);
    assert_eq!(app.count("avatars").await, 0);
    assert_eq!(
        app.count("security_events WHERE kind = 'avatar_changed'")
            .await,
        4
    );
}

async fn files_that_are_not_what_they_say_too_large_or_bombs_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let access = app.sign_up("careful").await["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let first = upload_result(
        &app,
        &access,
        "me.png",
        "image/png",
        encoded(&photo(64, 64), ImageFormat::Png),
    )
    .await;
    let kept = first["user"]["avatarUrl"].clone();

    let mut six_mib = b"\x89PNG\r\n\x1a\n".to_vec();
    six_mib.resize(6 * 1024 * 1024, 0);
    let jpeg = encoded(&photo(64, 64), ImageFormat::Jpeg);
    for (name, content_type, bytes, code) in [
        (
            "notes.png",
            "image/png",
            b"just some text, honestly".to_vec(),
            "INVALID",
        ),
        (
            "notes.png",
            "text/plain",
            b"just some text".to_vec(),
            "INVALID",
        ),
        ("photo.png", "image/png", jpeg.clone(), "INVALID"),
        ("photo.png", "application/octet-stream", jpeg, "INVALID"),
        ("huge.png", "image/png", six_mib, "TOO_LONG"),
        ("bomb.png", "image/png", png_bomb(), "OUT_OF_RANGE"),
        ("empty.png", "image/png", Vec::new(), "FIELD_MISSING"),
    ] {
        let result = upload_result(&app, &access, name, content_type, bytes).await;
        assert_eq!(result["__typename"], "ValidationFailed", "{name}: {result}");
        assert_eq!(result["fields"][0]["field"], "file");
        assert_eq!(result["fields"][0]["code"], code, "{name}: {result}");
    }
    // Nothing stored by any refusal.
    assert_eq!(
        app.gql_as(Some(&access), AVATAR, json!({})).await["data"]["me"]["avatarUrl"],
        kept
    );
    assert_eq!(app.count("avatars").await, 1);
    assert_eq!(
        app.count("security_events WHERE kind = 'avatar_changed'")
            .await,
        1
    );
}

async fn uploads_need_a_signed_in_caller_and_a_well_formed_request(backend: Backend) {
    let app = spawn_with(backend, |c| c.limits.max_upload_bytes = 1024 * 1024).await;
    let signed = app.sign_up("uploader").await;
    let access = signed["accessToken"].as_str().expect("token");
    let png = encoded(&photo(16, 16), ImageFormat::Png);

    // No token, or a bad one: refused before the body is read.
    for token in [None, Some("not.a.token")] {
        let (status, body) = upload(&app, token, "a.png", "image/png", png.clone()).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
    // Over AUTHQL_MAX_UPLOAD_BYTES: 413 before the resolver.
    let (status, body) = upload(&app, Some(access), "a.png", "image/png", vec![0; 2 << 20]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    // Not the multipart request spec: 400 with a JSON error.
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(access)
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\nnot json\r\n--XYZ--\r\n")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    // A JSON request has no file to give.
    let body = app
        .gql_as(Some(access), UPLOAD, json!({ "file": null }))
        .await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    // Naming a file the request does not carry (the engine's own marker,
    // which it would trust and index with): 400, and the server lives on.
    for (query, variables) in [
        (UPLOAD, json!({ "file": "#__graphql_file__:9" })),
        (UPLOAD, json!({ "file": "#__graphql_file__:x" })),
        (UPLOAD, json!({ "file": "#__graphql_file__:0" })),
        (
            "mutation { uploadAvatar(file: \"#__graphql_file__:3\") { __typename } }",
            json!({}),
        ),
        (
            "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { __typename } }",
            json!({ "input": { "name": ["#__graphql_file__:1"] } }),
        ),
    ] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(access)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 400, "{query} {variables}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    }
    // In a multipart request, only the index of its one file is valid.
    let operations = json!({ "query": UPLOAD, "variables": { "file": "#__graphql_file__:5" } });
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({}).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(png.clone()).file_name("a.png"),
        );
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(access)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    assert!(app.me(access).await["errors"].is_null(), "still serving");
    // Unknown avatars: 404 JSON, never a panic or 500.
    for path in [
        "/avatars/1-00000000000000000000000000000000",
        "/avatars/nothing",
        "/avatars/1-x?size=huge",
        "/avatars/99999999999999999999-abc",
    ] {
        let (status, content_type, _, _) = fetch(&app, path).await;
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert_eq!(content_type, "application/json", "{path}");
    }
    // Deleting the account takes the avatar with it.
    let uploaded = upload_result(&app, access, "a.png", "image/png", png).await;
    let avatar_url = url(&uploaded["user"]["avatarUrl"]);
    let body = app
        .gql_as(
            Some(access),
            "mutation($p: String!) { deleteAccount(password: $p) { __typename } }",
            json!({ "p": PASSWORD }),
        )
        .await;
    assert_eq!(
        body["data"]["deleteAccount"]["__typename"],
        "DeleteAccountSuccess"
    );
    assert_eq!(fetch(&app, &avatar_url).await.0, 404);
    assert_eq!(app.count("avatars").await, 0);
}

crate::on_both_backends!(
    uploads_are_re_encoded_and_served_with_long_caching,
    files_that_are_not_what_they_say_too_large_or_bombs_are_refused,
    uploads_need_a_signed_in_caller_and_a_well_formed_request,
);
