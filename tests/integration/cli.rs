//! The operator commands through the binary: `gateway user ...`, `gateway sessions revoke`,
//! `gateway check-config`. Exit codes: 0 done, 1 the operation failed, 2 usage or
//! configuration problem.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use gateway::password::Hasher;
use gateway::sessions::{self, SessionMeta};
use gateway::users::{self, NewUser, Status, User};

use crate::support::{Output, TestDb, cli, gateway};

async fn create(db: &TestDb, email: &str, password: Option<&[u8]>, roles: &[&str]) -> Output {
    let mut args = vec!["user", "create", "--email", email];
    if password.is_some() {
        args.push("--password-stdin");
    }
    for role in roles {
        args.extend(["--role", role]);
    }
    cli(db, &args, password).await
}

async fn find(db: &TestDb, email: &str) -> Option<User> {
    users::find_by_email(db.pool(), email)
        .await
        .expect("find_by_email")
}

async fn user_count(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0)
}

async fn updated_at(db: &TestDb, email: &str) -> SystemTime {
    db.client()
        .await
        .query_one("SELECT updated_at FROM users WHERE email = $1", &[&email])
        .await
        .unwrap()
        .get(0)
}

fn hasher() -> Hasher {
    Hasher::new(4, 2, 16)
}

#[tokio::test]
async fn create_lowercases_the_email_and_marks_it_verified() {
    let db = TestDb::new().await;
    create(&db, "Alice@Example.COM", None, &["ops", "admin"])
        .await
        .expect_code(0)
        .expect_output("alice@example.com");
    let user = find(&db, "alice@example.com")
        .await
        .expect("stored lowercased");
    assert_eq!(user.email, "alice@example.com");
    assert!(user.email_verified);
    assert_eq!(user.status, Status::Active);
    assert_eq!(user.roles, ["admin", "ops"]);
    assert_eq!(user.password_hash, None, "no --password-stdin, no password");
    assert_eq!(user_count(&db).await, 1);
}

#[tokio::test]
async fn a_duplicate_email_is_refused() {
    let db = TestDb::new().await;
    create(&db, "bob@example.com", None, &[])
        .await
        .expect_code(0);
    for again in ["bob@example.com", "BOB@example.com"] {
        create(&db, again, Some(b"password1"), &["admin"])
            .await
            .expect_code(1)
            .expect_output("already exists");
    }
    assert_eq!(user_count(&db).await, 1);
    let bob = find(&db, "bob@example.com").await.unwrap();
    assert!(
        bob.roles.is_empty() && bob.password_hash.is_none(),
        "a refused create changes nothing: {bob:?}"
    );
}

#[tokio::test]
async fn bad_emails_are_refused() {
    let db = TestDb::new().await;
    for bad in [
        "not-an-email",
        "a@b",
        "alice@@example.com",
        "al ice@example.com",
        "alice@example..com",
        "",
    ] {
        create(&db, bad, None, &[])
            .await
            .expect_code(1)
            .expect_output("invalid email");
    }
    assert_eq!(user_count(&db).await, 0);
}

#[tokio::test]
async fn password_length_limits() {
    let db = TestDb::new().await;
    for (password, message) in [
        (vec![b'p'; 7], "too short"),
        (vec![b'p'; 257], "too long"),
        (Vec::new(), "too short"),
        (b"1234567\n".to_vec(), "too short"),
    ] {
        create(&db, "short@example.com", Some(&password), &[])
            .await
            .expect_code(1)
            .expect_output(message);
    }
    assert_eq!(
        user_count(&db).await,
        0,
        "a refused password creates no user"
    );

    let h = hasher();
    for (len, suffix) in [
        (8, ""),
        (72, ""),
        (73, ""),
        (256, ""),
        (256, "\n"),
        (8, "\r\n"),
    ] {
        let password: String = (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let email = format!("len{len}-{}@example.com", suffix.len());
        let input = format!("{password}{suffix}");
        create(&db, &email, Some(input.as_bytes()), &[])
            .await
            .expect_code(0);
        let hash = find(&db, &email)
            .await
            .unwrap()
            .password_hash
            .expect("password stored");
        assert!(hash.starts_with("$2"), "bcrypt hash: {hash}");
        assert!(
            h.verify(&password, Some(&hash)).await.unwrap(),
            "{len}-byte password must verify"
        );
        if !suffix.is_empty() {
            assert!(
                !h.verify(&input, Some(&hash)).await.unwrap(),
                "the trailing newline is not part of it"
            );
        }
    }
}

#[tokio::test]
async fn long_passwords_count_every_byte() {
    let db = TestDb::new().await;
    let password = format!("{}z", "correct horse battery staple ".repeat(4)); // 117 bytes
    assert!(password.len() > 72);
    create(&db, "long@example.com", Some(password.as_bytes()), &[])
        .await
        .expect_code(0);
    let hash = find(&db, "long@example.com")
        .await
        .unwrap()
        .password_hash
        .unwrap();
    let h = hasher();
    assert!(h.verify(&password, Some(&hash)).await.unwrap());
    let last_changed = format!("{}y", &password[..password.len() - 1]);
    for wrong in [
        &password[..72],
        &password[..password.len() - 1],
        last_changed.as_str(),
    ] {
        assert!(
            !h.verify(wrong, Some(&hash)).await.unwrap(),
            "{wrong:?} must not verify"
        );
    }
}

#[tokio::test]
async fn invalid_roles_are_refused() {
    let db = TestDb::new().await;
    for bad in ["Admin", "a,b", "a b", ""] {
        create(&db, "carol@example.com", None, &["ops", bad])
            .await
            .expect_code(1)
            .expect_output("invalid role");
    }
    assert_eq!(user_count(&db).await, 0);
    create(&db, "carol@example.com", None, &[])
        .await
        .expect_code(0);
    cli(
        &db,
        &[
            "user",
            "add-role",
            "--email",
            "carol@example.com",
            "--role",
            "a,b",
        ],
        None,
    )
    .await
    .expect_code(1)
    .expect_output("invalid role");
    assert!(
        find(&db, "carol@example.com")
            .await
            .unwrap()
            .roles
            .is_empty()
    );
}

#[tokio::test]
async fn commands_on_an_unknown_email_say_so() {
    let db = TestDb::new().await;
    create(&db, "known@example.com", None, &[])
        .await
        .expect_code(0);
    let email = "nobody@example.com";
    for args in [
        &["user", "add-role", "--email", email, "--role", "admin"][..],
        &["user", "remove-role", "--email", email, "--role", "admin"],
        &["user", "disable", "--email", email],
        &["user", "enable", "--email", email],
        &["user", "verify", "--email", email],
        &["sessions", "revoke", "--user-email", email],
    ] {
        cli(&db, args, None)
            .await
            .expect_code(1)
            .expect_output("no user");
    }
    cli(
        &db,
        &["user", "set-password", "--email", email],
        Some(b"password1\n"),
    )
    .await
    .expect_code(1)
    .expect_output("no user");
    assert_eq!(user_count(&db).await, 1);
}

#[tokio::test]
async fn role_changes_bump_updated_at() {
    let db = TestDb::new().await;
    let email = "dave@example.com";
    create(&db, email, None, &[]).await.expect_code(0);
    let created = updated_at(&db, email).await;

    cli(
        &db,
        &[
            "user",
            "add-role",
            "--email",
            "Dave@Example.com",
            "--role",
            "admin",
        ],
        None,
    )
    .await
    .expect_code(0);
    assert_eq!(find(&db, email).await.unwrap().roles, ["admin"]);
    let granted = updated_at(&db, email).await;
    assert!(
        granted > created,
        "add-role must set users.updated_at (the revocation poll reads it)"
    );

    cli(
        &db,
        &["user", "add-role", "--email", email, "--role", "admin"],
        None,
    )
    .await
    .expect_code(0);
    assert_eq!(
        find(&db, email).await.unwrap().roles,
        ["admin"],
        "granting twice is a no-op"
    );

    cli(
        &db,
        &["user", "remove-role", "--email", email, "--role", "admin"],
        None,
    )
    .await
    .expect_code(0);
    assert!(find(&db, email).await.unwrap().roles.is_empty());
    assert!(
        updated_at(&db, email).await > granted,
        "remove-role must set users.updated_at"
    );
    cli(
        &db,
        &["user", "remove-role", "--email", email, "--role", "admin"],
        None,
    )
    .await
    .expect_code(0);
}

#[tokio::test]
async fn disable_and_enable_set_the_status() {
    let db = TestDb::new().await;
    let email = "erin@example.com";
    create(&db, email, None, &[]).await.expect_code(0);
    let before = updated_at(&db, email).await;

    cli(&db, &["user", "disable", "--email", email], None)
        .await
        .expect_code(0);
    assert_eq!(find(&db, email).await.unwrap().status, Status::Disabled);
    let disabled = updated_at(&db, email).await;
    assert!(disabled > before, "disable must set users.updated_at");
    let status: String = db
        .client()
        .await
        .query_one("SELECT status FROM users WHERE email = $1", &[&email])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "disabled");

    cli(&db, &["user", "enable", "--email", email], None)
        .await
        .expect_code(0);
    assert_eq!(find(&db, email).await.unwrap().status, Status::Active);
    assert!(updated_at(&db, email).await > disabled);
}

#[tokio::test]
async fn verify_marks_the_email_verified() {
    let db = TestDb::new().await;
    let new = NewUser {
        email: "frank@example.com",
        email_verified: false,
        password_hash: None,
        roles: &[],
    };
    users::create(db.pool(), &new).await.unwrap();
    assert!(!find(&db, "frank@example.com").await.unwrap().email_verified);
    cli(
        &db,
        &["user", "verify", "--email", "FRANK@example.com"],
        None,
    )
    .await
    .expect_code(0);
    assert!(find(&db, "frank@example.com").await.unwrap().email_verified);
}

#[tokio::test]
async fn set_password_replaces_the_hash() {
    let db = TestDb::new().await;
    let email = "grace@example.com";
    create(&db, email, Some(b"first password\n"), &[])
        .await
        .expect_code(0);
    cli(
        &db,
        &["user", "set-password", "--email", email],
        Some(b"short\n"),
    )
    .await
    .expect_code(1)
    .expect_output("too short");
    cli(
        &db,
        &["user", "set-password", "--email", email],
        Some(b"second password\n"),
    )
    .await
    .expect_code(0);
    let hash = find(&db, email).await.unwrap().password_hash.unwrap();
    let h = hasher();
    assert!(h.verify("second password", Some(&hash)).await.unwrap());
    assert!(!h.verify("first password", Some(&hash)).await.unwrap());
}

#[tokio::test]
async fn sessions_revoke_by_id_and_by_user() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let new_user = |email: &'static str| NewUser {
        email,
        email_verified: true,
        password_hash: None,
        roles: &[],
    };
    let heidi = users::create(pool, &new_user("heidi@example.com"))
        .await
        .unwrap();
    let ivan = users::create(pool, &new_user("ivan@example.com"))
        .await
        .unwrap();
    let hour = Duration::from_secs(3600);
    let mut heidis = Vec::new();
    for _ in 0..3 {
        heidis.push(
            sessions::create(pool, &heidi.id, &SessionMeta::default(), hour)
                .await
                .unwrap(),
        );
    }
    let ivans = sessions::create(pool, &ivan.id, &SessionMeta::default(), hour)
        .await
        .unwrap();
    let revoked = || async {
        let rows = db
            .client()
            .await
            .query(
                "SELECT id, revoked_reason FROM sessions WHERE revoked_at IS NOT NULL ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.get::<_, uuid::Uuid>(0), r.get::<_, Option<String>>(1)))
            .collect::<Vec<_>>()
    };

    let one = heidis[0].id.to_string();
    cli(&db, &["sessions", "revoke", "--session-id", &one], None)
        .await
        .expect_code(0)
        .expect_output("revoked 1 session(s)");
    assert_eq!(
        revoked().await,
        [(heidis[0].id, Some("operator".to_string()))]
    );
    cli(&db, &["sessions", "revoke", "--session-id", &one], None)
        .await
        .expect_code(0)
        .expect_output("revoked 0 session(s)");
    cli(
        &db,
        &[
            "sessions",
            "revoke",
            "--session-id",
            &uuid::Uuid::new_v4().to_string(),
        ],
        None,
    )
    .await
    .expect_code(0)
    .expect_output("revoked 0 session(s)");

    cli(
        &db,
        &["sessions", "revoke", "--user-email", "Heidi@Example.com"],
        None,
    )
    .await
    .expect_code(0)
    .expect_output("revoked 2 session(s)");
    let mut expected: Vec<_> = heidis
        .iter()
        .map(|s| (s.id, Some("operator".to_string())))
        .collect();
    expected.sort();
    assert_eq!(
        revoked().await,
        expected,
        "all of heidi's sessions, none of ivan's"
    );
    assert!(
        sessions::list(pool, &ivan.id)
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == ivans.id)
    );
    assert!(sessions::list(pool, &heidi.id).await.unwrap().is_empty());

    // Usage errors.
    cli(&db, &["sessions", "revoke"], None).await.expect_code(2);
    cli(
        &db,
        &["sessions", "revoke", "--session-id", "not-a-uuid"],
        None,
    )
    .await
    .expect_code(2);
    cli(
        &db,
        &[
            "sessions",
            "revoke",
            "--session-id",
            &one,
            "--user-email",
            "heidi@example.com",
        ],
        None,
    )
    .await
    .expect_code(2);
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let db = TestDb::new().await;
    for args in [
        &["user", "create"][..],
        &["user", "create", "--email"],
        &["user", "add-role", "--email", "a@example.com"],
        &["user", "frobnicate"],
        &["migrate", "sideways"],
        &[],
    ] {
        cli(&db, args, None).await.expect_code(2);
    }
    assert_eq!(user_count(&db).await, 0);
}

#[tokio::test]
async fn an_unreachable_database_fails_the_operation() {
    let out = gateway(["user", "create", "--email", "a@example.com"])
        .env(
            "GATEWAY_DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/gateway",
        )
        .env("GATEWAY_DATABASE__CONNECT_TIMEOUT", "2s")
        .run()
        .await;
    out.expect_code(1).expect_output("database");
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    file
}

async fn check_config(file: &tempfile::NamedTempFile) -> Output {
    gateway(["check-config", "--config"])
        .env_remove("GATEWAY_AUTH__BCRYPT_COST")
        .arg(file.path())
        .run()
        .await
}

#[tokio::test]
async fn check_config_names_an_unknown_key() {
    let file = config_file(
        "[server]\nlisten = \"127.0.0.1:8443\"\nlisen = \"127.0.0.1:1\"\n[srever]\nlisten = \"127.0.0.1:8443\"\n",
    );
    // Every unknown key at once, each with its full path.
    check_config(&file)
        .await
        .expect_code(2)
        .expect_output("unknown key `server.lisen`")
        .expect_output("unknown key `srever`");
    let file = config_file("[auth]\nbcrypt_cost = \"twelve\"\n");
    check_config(&file)
        .await
        .expect_code(2)
        .expect_output("auth.bcrypt_cost")
        .expect_output("line 2");
}

#[tokio::test]
async fn check_config_reports_every_problem_with_its_key() {
    let file = config_file(
        r#"
        [server]
        listen = "nowhere"
        tls_cert = "cert.pem"
        hsts_max_age = "a year"
        [sessions]
        cache_ttl = "soon"
        [auth]
        bcrypt_cost = 2
        secret = "short"
        [log]
        format = "xml"
        [mail]
        transport = "pigeon"
        [[routes]]
        path_prefix = "admin"
        upstream = "ftp://x"
        auth = "maybe"
        "#,
    );
    let out = check_config(&file).await;
    out.expect_code(2);
    for key in [
        "server.listen",
        "server.tls_key",
        "server.hsts_max_age",
        "sessions.cache_ttl",
        "auth.bcrypt_cost",
        "auth.secret",
        "log.format",
        "mail.transport",
        "routes[0].path_prefix",
        "routes[0].upstream",
        "routes[0].auth",
    ] {
        out.expect_output(key);
    }

    // Environment overrides: the variable is named, or at least the key it tried to set.
    gateway(["check-config"])
        .env("GATEWAY_AUTH__BCRYPT_COST", "twelve")
        .run()
        .await
        .expect_code(2)
        .expect_output("GATEWAY_AUTH__BCRYPT_COST");
    gateway(["check-config"])
        .env("GATEWAY_SESSIONS__NO_SUCH_KEY", "1")
        .run()
        .await
        .expect_code(2)
        .expect_output("no_such_key");
}

#[tokio::test]
async fn check_config_accepts_a_valid_file_and_refuses_a_missing_one() {
    let file = config_file(
        r#"
        [database]
        url = "postgres://postgres@127.0.0.1:5432/gateway"
        [auth]
        bcrypt_cost = 4
        secret = "0123456789abcdef0123456789abcdef0123456789"
        [[routes]]
        path_prefix = "/api"
        upstream = "http://127.0.0.1:9000"
        "#,
    );
    check_config(&file)
        .await
        .expect_code(0)
        .expect_output("configuration is valid");
    // Without the secret, serve could not start: check-config says so.
    let out = gateway(["check-config"]).run().await;
    out.expect_code(2).expect_output("auth.secret");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    gateway(["check-config", "--config"])
        .arg(&missing)
        .run()
        .await
        .expect_code(2)
        .expect_output("--config")
        .expect_output("missing.toml");
}
