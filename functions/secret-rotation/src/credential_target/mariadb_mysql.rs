//! `engine: mariadb` / `mysql`: the user changes its own password (MariaDB `SET PASSWORD`,
//! MySQL `ALTER USER CURRENT_USER()`); the other user of an alternating pair is left with
//! exactly the current one's privileges, replayed from `SHOW GRANTS` (`WITH GRANT OPTION`
//! included, so a copy can itself grant in a later rotation). Passwords are literals for the
//! `NO_BACKSLASH_ESCAPES` session `shared::database::connect` opens.

use crate::database_users::{DatabaseUserError, DatabaseUsers, Session};
use crate::sql::{self, GrantCopy};
use secrecy::{ExposeSecret, SecretString};
use shared::database::{DatabaseSecret, DbConnection, Engine, sql::mysql_string_literal};

/// MariaDB and MySQL (and RDS's aliases for them): one protocol, one dialect for what
/// rotation does; [`Engine`] tells them apart where they differ.
pub(crate) struct MariaDbMySql;

impl DatabaseUsers for MariaDbMySql {
    async fn change_own_password(
        &self,
        connection: &mut DbConnection,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<(), DatabaseUserError> {
        let literal = mysql_string_literal(new_password.expose_secret());
        let statement = match secret.engine {
            // MariaDB lets a user change only its own password this way without CREATE USER
            // (AWS's MariaDB template does the same).
            Engine::MariaDb => format!("SET PASSWORD = PASSWORD({literal})"),
            Engine::MySql => format!("ALTER USER CURRENT_USER() IDENTIFIED BY {literal}"),
            Engine::Postgres => return Err(DatabaseUserError::DriverMismatch(secret.engine)),
        };
        Session::new(connection, secret, new_password)
            .execute(
                &format!("changing the password of `{}`", secret.username),
                statement,
            )
            .await
    }

    async fn provision_alternate(
        &self,
        master: &mut DbConnection,
        master_secret: &DatabaseSecret,
        source: &str,
        target: &str,
        password: &SecretString,
    ) -> Result<(), DatabaseUserError> {
        let mut session = Session::new(master, master_secret, password);
        provision(&mut session, source, target, password).await
    }
}

async fn provision(
    session: &mut Session<'_>,
    source: &str,
    target: &str,
    password: &SecretString,
) -> Result<(), DatabaseUserError> {
    let engine = session.engine;
    let DbConnection::MySql(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let hosts: Result<Vec<String>, _> =
        sqlx::query_scalar("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = ?")
            .bind(source)
            .fetch_all(&mut *c)
            .await;
    let hosts = hosts.map_err(|e| session.failed(&format!("looking up user `{source}`"), e))?;
    let host = match hosts.as_slice() {
        [host] => host.clone(),
        [] => {
            return Err(DatabaseUserError::NoSuchUser {
                user: source.to_owned(),
                engine,
            });
        }
        many => {
            return Err(DatabaseUserError::AmbiguousHost {
                user: source.to_owned(),
                engine,
                count: many.len(),
                hosts: many.join(", "),
            });
        }
    };
    let DbConnection::MySql(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let exists: Result<i64, _> =
        sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?")
            .bind(target)
            .bind(&host)
            .fetch_one(&mut *c)
            .await;
    let exists = exists.map_err(|e| session.failed(&format!("looking up user `{target}`"), e))? > 0;
    let from = sql::mysql_account(source, &host);
    let to = sql::mysql_account(target, &host);
    if !exists {
        session
            .execute(
                &format!("creating user {to}"),
                format!("CREATE USER {to} ACCOUNT LOCK"),
            )
            .await?;
    }
    copy_grants(session, &from, &to).await?;
    if engine == Engine::MySql {
        copy_mysql_tls_requirement(session, &host, source, &to).await?;
    }
    let literal = mysql_string_literal(password.expose_secret());
    session
        .execute(
            &format!("setting the password of {to}"),
            format!("ALTER USER {to} IDENTIFIED BY {literal} ACCOUNT UNLOCK"),
        )
        .await
}

/// Leaves `to` with exactly the privileges of `from` (see [`GrantCopy`]). Nothing is revoked
/// when they already match; otherwise a grant the master cannot give fails before anything
/// is revoked, and the instant between the `REVOKE ALL` and the replayed grants is the only
/// time `to` holds less than `from`.
async fn copy_grants(
    session: &mut Session<'_>,
    from: &str,
    to: &str,
) -> Result<(), DatabaseUserError> {
    let source = show_grants(session, from).await?;
    let target = show_grants(session, to).await?;
    let grants = match sql::grant_copy(&source, &target, from, to)? {
        GrantCopy::InStep => return Ok(()),
        GrantCopy::Replace { grants } => grants,
    };
    for line in source
        .iter()
        .filter(|l| l.contains(sql::UNGRANTABLE_ON_RDS))
    {
        tracing::warn!(
            grant = %line,
            "privilege left out of the copy: the RDS master cannot grant it"
        );
    }
    let copying = format!("copying grants of {from} to {to}");
    for grant in &grants {
        session.execute(&copying, grant.clone()).await?;
    }
    session
        .execute(
            &format!("revoking what {to} holds beyond {from}"),
            format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {to}"),
        )
        .await?;
    let remaining = show_grants(session, to).await?;
    for revoke in sql::revokes_left_over(&remaining, to)? {
        session
            .execute(&format!("revoking what {to} holds beyond {from}"), revoke)
            .await?;
    }
    for grant in grants {
        session.execute(&copying, grant).await?;
    }
    Ok(())
}

async fn show_grants(
    session: &mut Session<'_>,
    account: &str,
) -> Result<Vec<String>, DatabaseUserError> {
    let DbConnection::MySql(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let grants: Result<Vec<String>, _> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW GRANTS FOR {account}")))
            .fetch_all(&mut *c)
            .await;
    grants.map_err(|e| session.failed(&format!("reading the grants of {account}"), e))
}

/// MySQL 8 `SHOW GRANTS` omits `REQUIRE`, so the TLS requirement is copied from `mysql.user`
/// (MariaDB prints it in the grants, which are replayed as they are).
async fn copy_mysql_tls_requirement(
    session: &mut Session<'_>,
    host: &str,
    source: &str,
    to: &str,
) -> Result<(), DatabaseUserError> {
    let DbConnection::MySql(c) = &mut *session.connection else {
        return Err(DatabaseUserError::DriverMismatch(session.engine));
    };
    let ssl_type: Result<String, _> = sqlx::query_scalar(
        "SELECT CAST(ssl_type AS CHAR) FROM mysql.user WHERE User = ? AND Host = ?",
    )
    .bind(source)
    .bind(host)
    .fetch_one(&mut *c)
    .await;
    let ssl_type = ssl_type.map_err(|e| session.failed("reading the TLS requirement", e))?;
    let clause = match ssl_type.as_str() {
        "ANY" => "SSL",
        "X509" => "X509",
        "" => return Ok(()),
        _ => {
            return Err(DatabaseUserError::Statement {
                action: format!("copying the TLS requirement to {to}"),
                engine: session.engine,
                host: session.host.to_owned(),
                port: session.port,
                message: format!(
                    "`{source}` requires a specific certificate (ssl_type {ssl_type}); set REQUIRE on {to} by hand"
                ),
            });
        }
    };
    session
        .execute(
            &format!("copying the TLS requirement to {to}"),
            format!("ALTER USER {to} REQUIRE {clause}"),
        )
        .await
}
