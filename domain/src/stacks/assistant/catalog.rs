//! The catalog of service templates: what the generator chooses from, and what the optimizer
//! knows of an image (its stable tag, health check, non-root user, writable paths, the
//! capabilities it needs once the others are dropped).
//!
//! Tags are pinned to a patch release. `tag` is the variant generation uses (alpine where it
//! exists: smaller); `pin` is the default variant, used to pin `:latest`, so that pinning keeps
//! the image's distribution (and so the user ids its volumes are owned by).

/// What a template is for: it decides wiring, networks and order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    /// An application runtime: built from the user's source.
    App,
    /// A database: data in a named volume.
    Database,
    /// A cache.
    Cache,
    /// A message queue.
    Queue,
    /// A web server or reverse proxy in front of the apps.
    Proxy,
}

/// An environment variable an app gets to reach a data service: its name and value.
pub(crate) type Link = (&'static str, &'static str);

/// One service template.
#[derive(Debug)]
pub(crate) struct Template {
    /// Its name in `Generated::services` and in stack names.
    pub key: &'static str,
    pub kind: Kind,
    /// Words and phrases of a description that choose it (lowercase, whole words).
    pub keywords: &'static [&'static str],
    /// The image's repository (for apps: the base image their Dockerfile starts from).
    pub image: &'static str,
    /// The tag generation uses.
    pub tag: &'static str,
    /// The tag that pins `:latest` (the default variant).
    pub pin: &'static str,
    /// The port it listens on in the container.
    pub port: u16,
    /// Its data directory, kept in a named volume `<key>_data`.
    pub data: Option<&'static str>,
    /// Its own environment (values are `${VAR}` interpolations or constants, never secrets).
    pub env: &'static [(&'static str, &'static str)],
    /// What an app that depends on it gets to reach it.
    pub link: Option<Link>,
    /// Its health check's `test`.
    pub healthcheck: Option<&'static [&'static str]>,
    /// A non-root user its image allows running as.
    pub user: Option<&'static str>,
    /// Paths it writes to that need a tmpfs on a read-only root filesystem.
    pub tmpfs: &'static [&'static str],
    /// Capabilities it needs once all are dropped.
    pub cap_add: &'static [&'static str],
    /// Default CPU limit.
    pub cpus: f64,
    /// Default memory limit, in MB.
    pub memory_mb: u64,
    /// Least memory it starts with, in MB.
    pub min_memory_mb: u64,
    /// Apps: the command in development (reloading) and once deployed.
    pub commands: Option<(&'static [&'static str], &'static [&'static str])>,
    /// Apps: the variable that says which environment it runs in, and its values in
    /// development and once deployed.
    pub mode: Option<(&'static str, &'static str, &'static str)>,
    /// Apps: where the source is mounted in development.
    pub workdir: &'static str,
    /// Apps: the host port development publishes it on, if not its own port.
    pub dev_host_port: Option<u16>,
}

const NONE: &[&str] = &[];

/// The data services' and proxies' templates, then the apps'.
pub(crate) const TEMPLATES: &[Template] = &[
    Template {
        key: "postgres",
        kind: Kind::Database,
        keywords: &["postgres", "postgresql", "pg", "pgsql", "psql", "postgis"],
        image: "postgres",
        tag: "16.4-alpine",
        pin: "16.4",
        port: 5432,
        data: Some("/var/lib/postgresql/data"),
        env: &[
            ("POSTGRES_USER", "${POSTGRES_USER:-app}"),
            ("POSTGRES_DB", "${POSTGRES_DB:-app}"),
            (
                "POSTGRES_PASSWORD",
                "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}",
            ),
        ],
        link: Some((
            "DATABASE_URL",
            "postgres://${POSTGRES_USER:-app}:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}@postgres:5432/${POSTGRES_DB:-app}",
        )),
        healthcheck: Some(&[
            "CMD-SHELL",
            "pg_isready -U \"$${POSTGRES_USER:-postgres}\" -d \"$${POSTGRES_DB:-postgres}\"",
        ]),
        user: Some("postgres"),
        tmpfs: &["/tmp", "/var/run/postgresql"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 1024,
        min_memory_mb: 128,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    Template {
        key: "mysql",
        kind: Kind::Database,
        keywords: &["mysql"],
        image: "mysql",
        tag: "8.4.2",
        pin: "8.4.2",
        port: 3306,
        data: Some("/var/lib/mysql"),
        env: &[
            ("MYSQL_DATABASE", "${MYSQL_DATABASE:-app}"),
            ("MYSQL_USER", "${MYSQL_USER:-app}"),
            ("MYSQL_PASSWORD", "${MYSQL_PASSWORD:?set MYSQL_PASSWORD}"),
            (
                "MYSQL_ROOT_PASSWORD",
                "${MYSQL_ROOT_PASSWORD:?set MYSQL_ROOT_PASSWORD}",
            ),
        ],
        link: Some((
            "DATABASE_URL",
            "mysql://${MYSQL_USER:-app}:${MYSQL_PASSWORD:?set MYSQL_PASSWORD}@mysql:3306/${MYSQL_DATABASE:-app}",
        )),
        healthcheck: Some(&["CMD", "mysqladmin", "ping", "-h", "127.0.0.1", "--silent"]),
        user: Some("mysql"),
        tmpfs: &["/tmp", "/var/run/mysqld"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 1024,
        min_memory_mb: 384,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    Template {
        key: "mariadb",
        kind: Kind::Database,
        keywords: &["mariadb"],
        image: "mariadb",
        tag: "11.4.3",
        pin: "11.4.3",
        port: 3306,
        data: Some("/var/lib/mysql"),
        env: &[
            ("MARIADB_DATABASE", "${MARIADB_DATABASE:-app}"),
            ("MARIADB_USER", "${MARIADB_USER:-app}"),
            (
                "MARIADB_PASSWORD",
                "${MARIADB_PASSWORD:?set MARIADB_PASSWORD}",
            ),
            (
                "MARIADB_ROOT_PASSWORD",
                "${MARIADB_ROOT_PASSWORD:?set MARIADB_ROOT_PASSWORD}",
            ),
        ],
        link: Some((
            "DATABASE_URL",
            "mysql://${MARIADB_USER:-app}:${MARIADB_PASSWORD:?set MARIADB_PASSWORD}@mariadb:3306/${MARIADB_DATABASE:-app}",
        )),
        healthcheck: Some(&["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"]),
        user: Some("mysql"),
        tmpfs: &["/tmp", "/run/mysqld"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 1024,
        min_memory_mb: 256,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    Template {
        key: "mongodb",
        kind: Kind::Database,
        keywords: &["mongo", "mongodb", "mongoose"],
        image: "mongo",
        tag: "7.0.14",
        pin: "7.0.14",
        port: 27017,
        data: Some("/data/db"),
        env: &[
            ("MONGO_INITDB_ROOT_USERNAME", "${MONGO_USER:-app}"),
            (
                "MONGO_INITDB_ROOT_PASSWORD",
                "${MONGO_PASSWORD:?set MONGO_PASSWORD}",
            ),
        ],
        link: Some((
            "MONGODB_URL",
            "mongodb://${MONGO_USER:-app}:${MONGO_PASSWORD:?set MONGO_PASSWORD}@mongodb:27017/?authSource=admin",
        )),
        healthcheck: Some(&[
            "CMD",
            "mongosh",
            "--quiet",
            "--eval",
            "db.adminCommand('ping').ok",
        ]),
        user: Some("mongodb"),
        tmpfs: &["/tmp"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 1024,
        min_memory_mb: 256,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    Template {
        key: "redis",
        kind: Kind::Cache,
        keywords: &["redis"],
        image: "redis",
        tag: "7.4.1-alpine",
        pin: "7.4.1",
        port: 6379,
        data: Some("/data"),
        env: &[],
        link: Some(("REDIS_URL", "redis://redis:6379/0")),
        healthcheck: Some(&["CMD", "redis-cli", "ping"]),
        user: Some("redis"),
        tmpfs: &["/tmp"],
        cap_add: NONE,
        cpus: 0.5,
        memory_mb: 256,
        min_memory_mb: 32,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    Template {
        key: "memcached",
        kind: Kind::Cache,
        keywords: &["memcached", "memcache"],
        image: "memcached",
        tag: "1.6.31-alpine",
        pin: "1.6.31",
        port: 11211,
        data: None,
        env: &[],
        link: Some(("MEMCACHED_SERVERS", "memcached:11211")),
        // Neither variant ships a client the check could use on both.
        healthcheck: None,
        user: Some("memcache"),
        tmpfs: NONE,
        cap_add: NONE,
        cpus: 0.25,
        memory_mb: 128,
        min_memory_mb: 32,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    Template {
        key: "rabbitmq",
        kind: Kind::Queue,
        keywords: &["rabbitmq", "rabbit", "amqp"],
        image: "rabbitmq",
        tag: "3.13.7-management-alpine",
        pin: "3.13.7",
        port: 5672,
        data: Some("/var/lib/rabbitmq"),
        env: &[
            ("RABBITMQ_DEFAULT_USER", "${RABBITMQ_USER:-app}"),
            (
                "RABBITMQ_DEFAULT_PASS",
                "${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD}",
            ),
        ],
        link: Some((
            "AMQP_URL",
            "amqp://${RABBITMQ_USER:-app}:${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD}@rabbitmq:5672/",
        )),
        healthcheck: Some(&["CMD", "rabbitmq-diagnostics", "-q", "ping"]),
        user: Some("rabbitmq"),
        tmpfs: &["/tmp"],
        cap_add: NONE,
        cpus: 0.5,
        memory_mb: 512,
        min_memory_mb: 256,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    Template {
        key: "nginx",
        kind: Kind::Proxy,
        keywords: &["nginx"],
        image: "nginx",
        tag: "1.27.2-alpine",
        pin: "1.27.2",
        port: 80,
        data: None,
        env: &[],
        link: None,
        healthcheck: Some(&[
            "CMD-SHELL",
            "curl -sS -o /dev/null http://127.0.0.1/ || wget -q -O /dev/null http://127.0.0.1/ || exit 1",
        ]),
        // The master process starts as root and hands the workers to `nginx` itself.
        user: None,
        tmpfs: &["/tmp", "/var/cache/nginx", "/var/run"],
        cap_add: &["CHOWN", "SETGID", "SETUID", "NET_BIND_SERVICE"],
        cpus: 0.25,
        memory_mb: 128,
        min_memory_mb: 16,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    Template {
        key: "traefik",
        kind: Kind::Proxy,
        keywords: &["traefik"],
        image: "traefik",
        tag: "v3.1.6",
        pin: "v3.1.6",
        port: 80,
        data: None,
        env: &[],
        link: None,
        // `traefik healthcheck` needs `--ping`, which a configuration may not enable.
        healthcheck: None,
        user: None,
        tmpfs: &["/tmp"],
        cap_add: &["NET_BIND_SERVICE"],
        cpus: 0.25,
        memory_mb: 128,
        min_memory_mb: 32,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    Template {
        key: "caddy",
        kind: Kind::Proxy,
        keywords: &["caddy"],
        image: "caddy",
        tag: "2.8.4-alpine",
        pin: "2.8.4",
        port: 80,
        data: Some("/data"),
        env: &[],
        link: None,
        healthcheck: Some(&[
            "CMD-SHELL",
            "wget -q -O /dev/null http://127.0.0.1:2019/config/ || exit 1",
        ]),
        user: None,
        tmpfs: &["/tmp", "/config"],
        cap_add: &["NET_BIND_SERVICE"],
        cpus: 0.25,
        memory_mb: 128,
        min_memory_mb: 32,
        commands: None,
        mode: None,
        workdir: "",
        dev_host_port: None,
    },
    // Application runtimes: built from ./<service> (a Dockerfile starting from `image:tag`).
    Template {
        key: "django",
        kind: Kind::App,
        keywords: &["django"],
        image: "python",
        tag: "3.12.7-slim",
        pin: "3.12.7",
        port: 8000,
        data: None,
        env: &[
            (
                "DJANGO_SECRET_KEY",
                "${DJANGO_SECRET_KEY:?set DJANGO_SECRET_KEY}",
            ),
            ("DJANGO_ALLOWED_HOSTS", "${DJANGO_ALLOWED_HOSTS:-localhost}"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONUNBUFFERED", "1"),
        ],
        link: None,
        healthcheck: Some(PYTHON_HTTP_CHECK_8000),
        user: Some("1000:1000"),
        tmpfs: &["/tmp"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 512,
        min_memory_mb: 128,
        commands: Some((
            &["python", "manage.py", "runserver", "0.0.0.0:8000"],
            &[
                "gunicorn",
                "--bind",
                "0.0.0.0:8000",
                "--workers",
                "3",
                "config.wsgi:application",
            ],
        )),
        mode: Some(("DJANGO_DEBUG", "true", "false")),
        workdir: "/app",
        dev_host_port: None,
    },
    Template {
        key: "flask",
        kind: Kind::App,
        keywords: &["flask"],
        image: "python",
        tag: "3.12.7-slim",
        pin: "3.12.7",
        port: 5000,
        data: None,
        env: &[
            (
                "FLASK_SECRET_KEY",
                "${FLASK_SECRET_KEY:?set FLASK_SECRET_KEY}",
            ),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONUNBUFFERED", "1"),
        ],
        link: None,
        healthcheck: Some(&[
            "CMD",
            "python",
            "-c",
            "import http.client; c = http.client.HTTPConnection('127.0.0.1', 5000, timeout=4); c.request('GET', '/'); c.getresponse()",
        ]),
        user: Some("1000:1000"),
        tmpfs: &["/tmp"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 512,
        min_memory_mb: 128,
        commands: Some((
            &[
                "flask", "run", "--host", "0.0.0.0", "--port", "5000", "--debug",
            ],
            &[
                "gunicorn",
                "--bind",
                "0.0.0.0:5000",
                "--workers",
                "3",
                "app:app",
            ],
        )),
        mode: Some(("FLASK_DEBUG", "1", "0")),
        workdir: "/app",
        dev_host_port: None,
    },
    Template {
        key: "fastapi",
        kind: Kind::App,
        keywords: &["fastapi", "uvicorn", "starlette"],
        image: "python",
        tag: "3.12.7-slim",
        pin: "3.12.7",
        port: 8000,
        data: None,
        env: &[("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONUNBUFFERED", "1")],
        link: None,
        healthcheck: Some(PYTHON_HTTP_CHECK_8000),
        user: Some("1000:1000"),
        tmpfs: &["/tmp"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 512,
        min_memory_mb: 128,
        commands: Some((
            &[
                "uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000", "--reload",
            ],
            &[
                "uvicorn",
                "main:app",
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
                "--workers",
                "2",
            ],
        )),
        mode: Some(("APP_ENV", "development", "production")),
        workdir: "/app",
        dev_host_port: None,
    },
    Template {
        key: "node",
        kind: Kind::App,
        keywords: &[
            "node",
            "nodejs",
            "node.js",
            "express",
            "expressjs",
            "express.js",
            "nestjs",
            "nest.js",
            "koa",
            "fastify",
            "next.js",
            "nextjs",
            "nuxt",
        ],
        image: "node",
        tag: "20.18.0-alpine",
        pin: "20.18.0",
        port: 3000,
        data: None,
        env: &[],
        link: None,
        healthcheck: Some(&[
            "CMD",
            "node",
            "-e",
            "require('http').get('http://127.0.0.1:3000/', () => process.exit(0)).on('error', () => process.exit(1))",
        ]),
        user: Some("node"),
        tmpfs: &["/tmp"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 512,
        min_memory_mb: 128,
        commands: Some((&["npm", "run", "dev"], &["node", "server.js"])),
        mode: Some(("NODE_ENV", "development", "production")),
        workdir: "/app",
        dev_host_port: None,
    },
    Template {
        key: "rails",
        kind: Kind::App,
        keywords: &["rails", "ruby on rails", "ror", "ruby"],
        image: "ruby",
        tag: "3.3.5-slim",
        pin: "3.3.5",
        port: 3000,
        data: None,
        env: &[
            ("SECRET_KEY_BASE", "${SECRET_KEY_BASE:?set SECRET_KEY_BASE}"),
            ("RAILS_LOG_TO_STDOUT", "1"),
        ],
        link: None,
        healthcheck: Some(&[
            "CMD",
            "ruby",
            "-rnet/http",
            "-e",
            "Net::HTTP.get_response(URI('http://127.0.0.1:3000/up'))",
        ]),
        user: Some("1000:1000"),
        tmpfs: &["/tmp", "/app/tmp"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 768,
        min_memory_mb: 256,
        commands: Some((
            &["bin/rails", "server", "-b", "0.0.0.0", "-p", "3000"],
            &["bin/rails", "server", "-b", "0.0.0.0", "-p", "3000"],
        )),
        mode: Some(("RAILS_ENV", "development", "production")),
        workdir: "/app",
        dev_host_port: None,
    },
    Template {
        key: "spring",
        kind: Kind::App,
        keywords: &[
            "spring",
            "spring boot",
            "springboot",
            "java",
            "kotlin",
            "jvm",
        ],
        image: "eclipse-temurin",
        tag: "21.0.4_7-jre",
        pin: "21.0.4_7-jre",
        port: 8080,
        data: None,
        env: &[("JAVA_TOOL_OPTIONS", "-XX:MaxRAMPercentage=75")],
        link: None,
        healthcheck: Some(&[
            "CMD-SHELL",
            "bash -c ':> /dev/tcp/127.0.0.1/8080' || exit 1",
        ]),
        user: Some("1000:1000"),
        tmpfs: &["/tmp"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 1024,
        min_memory_mb: 256,
        commands: Some((
            &["java", "-jar", "/app/app.jar"],
            &["java", "-jar", "/app/app.jar"],
        )),
        mode: Some(("SPRING_PROFILES_ACTIVE", "dev", "prod")),
        workdir: "/app",
        dev_host_port: None,
    },
    Template {
        key: "go",
        kind: Kind::App,
        keywords: &[
            "golang",
            "go app",
            "go api",
            "go service",
            "go backend",
            "go server",
            "go microservice",
            "in go",
            "gin",
            "go fiber",
        ],
        image: "golang",
        tag: "1.23.2-alpine",
        pin: "1.23.2",
        port: 8080,
        data: None,
        env: &[("GOCACHE", "/tmp/go-cache")],
        link: None,
        // A Go image holds what its Dockerfile puts there: no client can be assumed.
        healthcheck: None,
        user: Some("1000:1000"),
        tmpfs: &["/tmp"],
        cap_add: NONE,
        cpus: 1.0,
        memory_mb: 256,
        min_memory_mb: 64,
        commands: Some((&["go", "run", "."], &["/app/server"])),
        mode: Some(("APP_ENV", "development", "production")),
        workdir: "/app",
        dev_host_port: None,
    },
    Template {
        key: "php",
        kind: Kind::App,
        keywords: &["php", "laravel", "symfony"],
        image: "php",
        tag: "8.3.12-apache",
        pin: "8.3.12-apache",
        port: 80,
        data: None,
        env: &[],
        link: None,
        healthcheck: Some(&[
            "CMD",
            "php",
            "-r",
            "exit(@fsockopen('127.0.0.1', 80) ? 0 : 1);",
        ]),
        // Apache starts as root to bind port 80, then runs as www-data.
        user: None,
        tmpfs: &["/tmp", "/var/run/apache2", "/var/lock/apache2"],
        cap_add: &["CHOWN", "SETGID", "SETUID", "NET_BIND_SERVICE"],
        cpus: 1.0,
        memory_mb: 512,
        min_memory_mb: 128,
        commands: None,
        mode: Some(("APP_ENV", "development", "production")),
        workdir: "/var/www/html",
        dev_host_port: Some(8080),
    },
    Template {
        key: "static",
        kind: Kind::App,
        keywords: &[
            "static",
            "static site",
            "static website",
            "html",
            "react",
            "vue",
            "vue.js",
            "angular",
            "svelte",
            "spa",
            "frontend",
            "front end",
        ],
        image: "nginx",
        tag: "1.27.2-alpine",
        pin: "1.27.2",
        port: 80,
        data: None,
        env: &[],
        link: None,
        healthcheck: Some(&[
            "CMD-SHELL",
            "wget -q -O /dev/null http://127.0.0.1/ || exit 1",
        ]),
        user: None,
        tmpfs: &["/tmp", "/var/cache/nginx", "/var/run"],
        cap_add: &["CHOWN", "SETGID", "SETUID", "NET_BIND_SERVICE"],
        cpus: 0.25,
        memory_mb: 64,
        min_memory_mb: 16,
        commands: None,
        mode: None,
        workdir: "/usr/share/nginx/html",
        dev_host_port: Some(8080),
    },
];

const PYTHON_HTTP_CHECK_8000: &[&str] = &[
    "CMD",
    "python",
    "-c",
    "import http.client; c = http.client.HTTPConnection('127.0.0.1', 8000, timeout=4); c.request('GET', '/'); c.getresponse()",
];

/// Words that name a technology the catalog has no template for: the generator says so.
pub(crate) const UNSUPPORTED: &[&str] = &[
    "kafka",
    "zookeeper",
    "elasticsearch",
    "opensearch",
    "kibana",
    "logstash",
    "cassandra",
    "couchdb",
    "neo4j",
    "influxdb",
    "clickhouse",
    "minio",
    "prometheus",
    "grafana",
    "keycloak",
    "haproxy",
    "apache kafka",
    "nats",
    "sqlite",
    "wordpress",
    "celery",
    "sidekiq",
    "elixir",
    "phoenix",
    ".net",
    "dotnet",
    "asp.net",
];

/// Words that ask for a reverse proxy without naming one: nginx is assumed.
pub(crate) const PROXY_WORDS: &[&str] = &["reverse proxy", "proxy", "load balancer"];

/// A health check with the catalog's timings around `test`.
pub(crate) fn healthcheck(test: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "test": test,
        "interval": "10s",
        "timeout": "5s",
        "retries": 5,
        "start_period": "30s",
    })
}

/// The template by its key.
pub(crate) fn by_key(key: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.key == key)
}

/// The service template whose image is this repository (`postgres`, `redis`…): data services
/// and proxies only, an app's base image says nothing of the app.
pub(crate) fn service_by_image(repository: &str) -> Option<&'static Template> {
    TEMPLATES
        .iter()
        .find(|t| t.kind != Kind::App && t.image == repository)
}

/// The tag that pins `:latest` of this repository, if the catalog knows one.
pub(crate) fn stable_tag(repository: &str) -> Option<&'static str> {
    TEMPLATES
        .iter()
        .find(|t| t.image == repository)
        .map(|t| t.pin)
}

/// The data service a port usually belongs to (for troubleshooting connections).
pub(crate) fn by_port(port: u16) -> Option<&'static Template> {
    TEMPLATES
        .iter()
        .find(|t| t.kind != Kind::App && t.kind != Kind::Proxy && t.port == port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_pins_its_tags_and_never_holds_a_literal_secret() {
        for template in TEMPLATES {
            for tag in [template.tag, template.pin] {
                assert!(!tag.is_empty() && tag != "latest", "{}", template.key);
            }
            for (key, value) in template.env.iter().chain(template.link.iter()) {
                if super::super::document::is_secret_name(key) {
                    assert!(value.starts_with("${"), "{}: {key}", template.key);
                }
            }
            assert!(
                template.min_memory_mb <= template.memory_mb,
                "{}",
                template.key
            );
        }
    }

    #[test]
    fn keys_are_unique_and_images_find_their_service_templates() {
        for (i, template) in TEMPLATES.iter().enumerate() {
            assert!(
                TEMPLATES[i + 1..].iter().all(|t| t.key != template.key),
                "{}",
                template.key
            );
        }
        assert_eq!(
            service_by_image("postgres").map(|t| t.key),
            Some("postgres")
        );
        assert_eq!(service_by_image("nginx").map(|t| t.key), Some("nginx"));
        assert_eq!(service_by_image("python").map(|t| t.key), None);
        assert_eq!(stable_tag("python"), Some("3.12.7"));
        assert_eq!(by_port(5432).map(|t| t.key), Some("postgres"));
    }
}
