//! Generation: a compose document from a description, by the catalog's templates.
//!
//! The description's words choose templates (whole words and phrases, a negation just before
//! one — "without redis" — drops it). Services are named after their template (`postgres`,
//! `redis`, `nginx`), an app `web` when there is one (else after its template; a static site
//! `frontend`). Apps depend on every data service (healthy when it has a health check), the web
//! server on the apps; a `frontend` network joins the web server and the apps, a `backend` one
//! the apps and the data services (internal once deployed, unless security is basic). Data lives
//! in named volumes; secrets only ever as `${VAR:?…}` interpolations.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::catalog::{self, Kind, PROXY_WORDS, TEMPLATES, Template, UNSUPPORTED};
use super::{EnvironmentType, GenerationRequest, SecurityLevel, TargetPlatform};

/// A generated stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// A slug from what was recognized: `django-postgres-redis-nginx`.
    pub name: String,
    /// The compose mapping.
    pub configuration: Value,
    /// The templates used, in order (apps, databases, caches, queues, web server).
    pub services: Vec<String>,
    /// What was assumed or not recognized, and what the user must provide.
    pub notes: Vec<String>,
}

/// The version built app images are tagged with.
const APP_IMAGE_VERSION: &str = "0.1.0";
/// Longest stack name.
const MAX_NAME: usize = 63;

/// The description's words: lowercase, split on anything but letters, digits and `.+#`,
/// sentence dots dropped.
fn words(description: &str) -> Vec<String> {
    description
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '.' | '+' | '#')))
        .map(|w| w.trim_end_matches('.').to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Where a keyword (one or more words) first occurs, not negated; and whether it occurs
/// negated only.
fn find(words: &[String], keyword: &str) -> (Option<usize>, bool) {
    let wanted: Vec<&str> = keyword.split(' ').collect();
    let mut negated = false;
    for i in 0..words.len() {
        if words.len() - i < wanted.len() {
            break;
        }
        if words[i..i + wanted.len()]
            .iter()
            .zip(&wanted)
            .all(|(w, k)| w == k)
        {
            let before = i.checked_sub(1).map(|j| words[j].as_str());
            if matches!(
                before,
                Some("no" | "without" | "not" | "except" | "excluding")
            ) {
                negated = true;
            } else {
                return (Some(i), false);
            }
        }
    }
    (None, negated)
}

/// Where the first of a template's keywords occurs, and whether one was negated.
fn first_of(words: &[String], keywords: &[&str]) -> (Option<usize>, bool) {
    keywords
        .iter()
        .fold((None, false), |(best, negated), keyword| {
            let (at, neg) = find(words, keyword);
            let best = match (best, at) {
                (Some(b), Some(a)) => Some(b.min(a)),
                (b, a) => b.or(a),
            };
            (best, negated || neg)
        })
}

/// One service of the plan.
struct Planned {
    template: &'static Template,
    name: String,
}

/// Formats CPUs as compose writes them: `0.5`, `1`, `0.25`.
pub(crate) fn cpus_text(cpus: f64) -> String {
    let rounded = (cpus * 100.0).round() / 100.0;
    format!("{rounded}")
}

/// Formats memory as compose writes it: `512M`.
pub(crate) fn memory_text(mb: u64) -> String {
    format!("{mb}M")
}

/// Generates a stack from a request (its description already checked by the caller, see
/// [`super::parse_description`]; an unchecked one still gets an answer).
pub fn generate(req: &GenerationRequest) -> Generated {
    let words = words(&req.description);
    let mut notes = Vec::new();

    // Choose the templates.
    let mut chosen: Vec<(&'static Template, usize)> = Vec::new();
    let mut negated = Vec::new();
    for template in TEMPLATES {
        match first_of(&words, template.keywords) {
            (Some(at), _) => chosen.push((template, at)),
            (None, true) => negated.push(template.key),
            (None, false) => {}
        }
    }
    if !negated.is_empty() {
        notes.push(format!("left out as asked: {}", negated.join(", ")));
    }
    // A web server asked for without a name.
    if !chosen.iter().any(|(t, _)| t.kind == Kind::Proxy)
        && let Some(at) = PROXY_WORDS.iter().filter_map(|w| find(&words, w).0).min()
        && let Some(nginx) = catalog::by_key("nginx")
    {
        chosen.push((nginx, at));
        notes.push("a reverse proxy was asked for without a name: nginx assumed".to_owned());
    }
    // A language without a framework.
    if !chosen.iter().any(|(t, _)| t.kind == Kind::App) {
        for (language, key) in [
            ("python", "fastapi"),
            ("javascript", "node"),
            ("typescript", "node"),
        ] {
            if let (Some(at), _) = find(&words, language)
                && let Some(template) = catalog::by_key(key)
            {
                chosen.push((template, at));
                notes.push(format!(
                    "{language} was named without a framework: {key} assumed"
                ));
                break;
            }
        }
    }
    chosen.sort_by_key(|(t, at)| (t.kind, *at));
    // One web server in front.
    let proxies: Vec<&str> = chosen
        .iter()
        .filter(|(t, _)| t.kind == Kind::Proxy)
        .map(|(t, _)| t.key)
        .collect();
    if proxies.len() > 1 {
        notes.push(format!(
            "one web server in front is enough: kept {}, left out {}",
            proxies[0],
            proxies[1..].join(", ")
        ));
        let kept = proxies[0];
        chosen.retain(|(t, _)| t.kind != Kind::Proxy || t.key == kept);
    }
    // A static site is served by nginx itself.
    let apps: Vec<&str> = chosen
        .iter()
        .filter(|(t, _)| t.kind == Kind::App)
        .map(|(t, _)| t.key)
        .collect();
    if apps == ["static"] && chosen.iter().any(|(t, _)| t.key == "nginx") {
        chosen.retain(|(t, _)| t.key != "nginx");
        notes.push("the static site is served by nginx itself: no proxy in front".to_owned());
    }
    if chosen.is_empty() {
        if let Some(static_site) = catalog::by_key("static") {
            chosen.push((static_site, 0));
        }
        notes.push(
            "no service of the catalog was recognized in the description: generated a static \
             site served by nginx (the catalog knows postgres, mysql, mariadb, mongodb, redis, \
             memcached, rabbitmq, nginx, traefik, caddy, django, flask, fastapi, node, rails, \
             spring, go, php and static sites)"
                .to_owned(),
        );
    }
    let unknown: Vec<&str> = UNSUPPORTED
        .iter()
        .copied()
        .filter(|w| find(&words, w).0.is_some())
        .collect();
    if !unknown.is_empty() {
        notes.push(format!(
            "recognized but not in the catalog, so not generated: {}",
            unknown.join(", ")
        ));
    }

    let app_count = chosen.iter().filter(|(t, _)| t.kind == Kind::App).count();
    let planned: Vec<Planned> = chosen
        .iter()
        .map(|(template, _)| Planned {
            template,
            name: match (template.kind, template.key) {
                (Kind::App, _) if app_count == 1 => "web".to_owned(),
                (Kind::App, "static") => "frontend".to_owned(),
                _ => template.key.to_owned(),
            },
        })
        .collect();
    let services: Vec<String> = planned.iter().map(|p| p.template.key.to_owned()).collect();
    let name = slug(&services);
    let configuration = build(req, &name, &planned, &mut notes);
    Generated {
        name,
        configuration,
        services,
        notes,
    }
}

/// The stack's name: the templates' keys joined by `-`, cut at a key's end to fit.
fn slug(keys: &[String]) -> String {
    if keys == ["static"] {
        return "static-site".to_owned();
    }
    let mut name = String::new();
    for key in keys {
        let more = if name.is_empty() { 0 } else { 1 } + key.len();
        if name.len() + more > MAX_NAME {
            break;
        }
        if !name.is_empty() {
            name.push('-');
        }
        name.push_str(key);
    }
    name
}

/// Each service's limits: the templates' defaults, scaled down to fit the constraints.
fn limits(
    req: &GenerationRequest,
    planned: &[Planned],
    replicas: &[u32],
    notes: &mut Vec<String>,
) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = planned
        .iter()
        .map(|p| (p.template.cpus, p.template.memory_mb))
        .collect();
    let Some(constraints) = req.resource_constraints else {
        return out;
    };
    let weight = |i: usize| f64::from(replicas[i]);
    if let Some(max) = constraints.max_cpus {
        let total: f64 = out.iter().enumerate().map(|(i, l)| l.0 * weight(i)).sum();
        if total > max {
            let factor = max / total;
            for limit in &mut out {
                limit.0 = ((limit.0 * factor / 0.05 + 1e-9).floor() * 0.05).max(0.05);
            }
            notes.push(format!(
                "CPU limits scaled by {:.2} to fit max_cpus {} (the templates ask for {})",
                factor,
                cpus_text(max),
                cpus_text(total)
            ));
        }
    }
    if let Some(max) = constraints.max_memory_mb {
        let total: u64 = out
            .iter()
            .enumerate()
            .map(|(i, l)| l.1 * u64::from(replicas[i]))
            .sum();
        if total > max {
            let needed: u64 = planned
                .iter()
                .enumerate()
                .map(|(i, p)| p.template.min_memory_mb * u64::from(replicas[i]))
                .sum();
            for (limit, p) in out.iter_mut().zip(planned) {
                // Integer arithmetic: the same answer on every machine.
                let scaled = limit.1 * max / total / 16 * 16;
                limit.1 = scaled.max(p.template.min_memory_mb);
            }
            notes.push(format!(
                "memory limits scaled down to fit max_memory_mb {max} (the templates ask for {total})"
            ));
            if needed > max {
                notes.push(format!(
                    "max_memory_mb {max} is below what these services need to start ({needed} MB): \
                     each is given its minimum"
                ));
            }
        }
    }
    out
}

fn build(
    req: &GenerationRequest,
    stack: &str,
    planned: &[Planned],
    notes: &mut Vec<String>,
) -> Value {
    let deployed = req.environment_type.is_deployed();
    let platform = req.target_platform;
    let apps: Vec<&Planned> = planned
        .iter()
        .filter(|p| p.template.kind == Kind::App)
        .collect();
    let data: Vec<&Planned> = planned
        .iter()
        .filter(|p| matches!(p.template.kind, Kind::Database | Kind::Cache | Kind::Queue))
        .collect();
    let proxy = planned.iter().find(|p| p.template.kind == Kind::Proxy);
    let has_frontend = !apps.is_empty() || proxy.is_some();
    let has_backend = !data.is_empty();
    let internal_backend =
        deployed && !apps.is_empty() && req.security_level != SecurityLevel::Basic;

    let replicas: Vec<u32> = planned
        .iter()
        .map(|p| {
            let many = p.template.kind == Kind::App
                && req.environment_type == EnvironmentType::Production
                && platform != TargetPlatform::Docker;
            if many { 2 } else { 1 }
        })
        .collect();
    let limits = limits(req, planned, &replicas, notes);

    let mut used_ports: Vec<u16> = Vec::new();
    let mut publish = |preferred: u16| {
        let mut port = preferred;
        while used_ports.contains(&port) {
            port += 1;
        }
        used_ports.push(port);
        port
    };

    let mut services = Map::new();
    let mut volumes = Map::new();
    let mut configs = Map::new();
    let mut secrets_needed: Vec<String> = Vec::new();

    for (i, p) in planned.iter().enumerate() {
        let t = p.template;
        let mut s = Map::new();
        let mut environment = Map::new();
        let mut networks = Vec::new();
        let mut healthcheck = t.healthcheck.map(catalog::healthcheck);
        match t.kind {
            Kind::App => {
                s.insert(
                    "build".into(),
                    json!({
                        "context": format!("./{}", p.name),
                        "args": {"BASE_IMAGE": format!("{}:{}", t.image, t.tag)},
                    }),
                );
                s.insert(
                    "image".into(),
                    json!(format!("{stack}-{}:{APP_IMAGE_VERSION}", p.name)),
                );
                if let Some((var, dev, prod)) = t.mode {
                    environment.insert(var.into(), json!(if deployed { prod } else { dev }));
                }
                for (key, value) in t.env {
                    environment.insert((*key).into(), json!(value));
                }
                if t.key != "static" {
                    let mut depends = Map::new();
                    for d in &data {
                        if let Some((var, url)) = d.template.link {
                            let var = if environment.contains_key(var) {
                                format!("{}_URL", d.template.key.to_ascii_uppercase())
                            } else {
                                var.to_owned()
                            };
                            environment.insert(var, json!(url));
                        }
                        let condition = if d.template.healthcheck.is_some() {
                            "service_healthy"
                        } else {
                            "service_started"
                        };
                        depends.insert(d.name.clone(), json!({"condition": condition}));
                    }
                    if !depends.is_empty() {
                        s.insert("depends_on".into(), Value::Object(depends));
                    }
                }
                if let Some((dev, prod)) = t.commands {
                    s.insert("command".into(), json!(if deployed { prod } else { dev }));
                }
                if t.key != "static" && t.key != "php" {
                    s.insert("working_dir".into(), json!(t.workdir));
                }
                if deployed {
                    if proxy.is_none() {
                        let host = publish(t.dev_host_port.unwrap_or(t.port));
                        s.insert("ports".into(), json!([format!("{host}:{}", t.port)]));
                    }
                } else {
                    let host = publish(t.dev_host_port.unwrap_or(t.port));
                    s.insert("ports".into(), json!([format!("{host}:{}", t.port)]));
                    let mount = if t.key == "static" {
                        format!("./{}:{}:ro", p.name, t.workdir)
                    } else {
                        format!("./{}:{}", p.name, t.workdir)
                    };
                    s.insert("volumes".into(), json!([mount]));
                    // Health checks once deployed: in development the reloader restarts often.
                    healthcheck = None;
                }
                if !s.contains_key("ports") {
                    s.insert("expose".into(), json!([t.port.to_string()]));
                }
                networks.push("frontend");
                if has_backend {
                    networks.push("backend");
                }
                notes.push(format!(
                    "{} is built from ./{}: its Dockerfile should start FROM {}:{} (the build \
                     argument BASE_IMAGE) and install the app{}",
                    p.name,
                    p.name,
                    t.image,
                    t.tag,
                    match t.commands {
                        Some((dev, prod)) => format!(
                            "; it runs `{}`",
                            if deployed { prod } else { dev }.join(" ")
                        ),
                        None => String::new(),
                    }
                ));
                if healthcheck.is_none() && deployed {
                    notes.push(format!(
                        "{}: no health check is generated, its image holds what its Dockerfile \
                         puts there; add one",
                        p.name
                    ));
                }
            }
            Kind::Database | Kind::Cache | Kind::Queue => {
                s.insert("image".into(), json!(format!("{}:{}", t.image, t.tag)));
                for (key, value) in t.env {
                    environment.insert((*key).into(), json!(value));
                }
                if let Some(path) = t.data {
                    let volume = format!("{}_data", t.key);
                    s.insert("volumes".into(), json!([format!("{volume}:{path}")]));
                    volumes.insert(volume, json!({}));
                }
                if t.key == "postgres" {
                    // Docker's 64M of shared memory fails PostgreSQL's parallel queries.
                    s.insert("shm_size".into(), json!("256m"));
                }
                if apps.is_empty() && !deployed {
                    // Nothing in the stack uses it: this machine does.
                    let host = publish(t.port);
                    s.insert(
                        "ports".into(),
                        json!([format!("127.0.0.1:{host}:{}", t.port)]),
                    );
                } else {
                    s.insert("expose".into(), json!([t.port.to_string()]));
                }
                networks.push("backend");
            }
            Kind::Proxy => {
                s.insert("image".into(), json!(format!("{}:{}", t.image, t.tag)));
                let host = publish(t.port);
                s.insert("ports".into(), json!([format!("{host}:{}", t.port)]));
                if !apps.is_empty() {
                    let depends: Map<String, Value> = apps
                        .iter()
                        .map(|a| (a.name.clone(), json!({"condition": "service_started"})))
                        .collect();
                    s.insert("depends_on".into(), Value::Object(depends));
                }
                let routes = routes(&apps);
                match t.key {
                    "nginx" if !routes.is_empty() => {
                        if platform == TargetPlatform::DockerSwarm {
                            notes.push(
                                "docker stack deploy may not take a config's inline content: \
                                     if it refuses it, write configs.nginx_conf.content to a file \
                                     and name it in configs.nginx_conf.file"
                                    .to_owned(),
                            );
                        }
                        configs
                            .insert("nginx_conf".into(), json!({"content": nginx_conf(&routes)}));
                        s.insert(
                            "configs".into(),
                            json!([{
                                "source": "nginx_conf",
                                "target": "/etc/nginx/conf.d/default.conf",
                            }]),
                        );
                    }
                    "caddy" => {
                        if let Some((_, upstream)) = routes.first() {
                            s.insert(
                                "command".into(),
                                json!([
                                    "caddy",
                                    "reverse-proxy",
                                    "--from",
                                    ":80",
                                    "--to",
                                    upstream
                                ]),
                            );
                        }
                        if routes.len() > 1 {
                            notes.push(
                                "caddy proxies to the first app only: add a Caddyfile for the others"
                                    .to_owned(),
                            );
                        }
                        volumes.insert("caddy_data".into(), json!({}));
                        s.insert("volumes".into(), json!(["caddy_data:/data"]));
                    }
                    "traefik" => {
                        let provider = if platform == TargetPlatform::DockerSwarm {
                            "swarm"
                        } else {
                            "docker"
                        };
                        s.insert(
                            "command".into(),
                            json!([
                                format!("--providers.{provider}=true"),
                                format!("--providers.{provider}.exposedbydefault=false"),
                                "--entrypoints.web.address=:80",
                                "--ping=true",
                            ]),
                        );
                        s.insert(
                            "volumes".into(),
                            json!(["/var/run/docker.sock:/var/run/docker.sock:ro"]),
                        );
                        healthcheck = Some(catalog::healthcheck(&[
                            "CMD",
                            "traefik",
                            "healthcheck",
                            "--ping",
                        ]));
                        notes.push(
                            "traefik reads the Docker socket (read-only) to find the apps: \
                             whoever controls traefik controls Docker; prefer nginx or caddy \
                             where that matters"
                                .to_owned(),
                        );
                    }
                    _ => {}
                }
                if apps.is_empty() {
                    notes.push(format!(
                        "{} has no app to serve: it answers with its default page",
                        p.name
                    ));
                }
                networks.push("frontend");
            }
        }
        if !environment.is_empty() {
            for text in environment.values().filter_map(Value::as_str) {
                collect_required(text, &mut secrets_needed);
            }
            s.insert("environment".into(), Value::Object(environment));
        }
        if let Some(healthcheck) = healthcheck {
            s.insert("healthcheck".into(), healthcheck);
        }
        if !networks.is_empty() {
            s.insert("networks".into(), json!(networks));
        }
        shape_for_platform(&mut s, req, t, replicas[i], limits[i]);
        shape_for_security(&mut s, req.security_level, t);
        services.insert(p.name.clone(), Value::Object(s));
    }

    // Traefik routes by labels on the apps.
    if let Some(proxy) = proxy
        && proxy.template.key == "traefik"
    {
        for (prefix, app) in routes(&apps).iter().map(|(prefix, upstream)| {
            (
                prefix.clone(),
                upstream.split(':').next().unwrap_or_default().to_owned(),
            )
        }) {
            let Some(Value::Object(s)) = services.get_mut(&app) else {
                continue;
            };
            let port = apps
                .iter()
                .find(|a| a.name == app)
                .map_or(80, |a| a.template.port);
            let labels = json!({
                "traefik.enable": "true",
                format!("traefik.http.routers.{app}.rule"): format!("PathPrefix(`{prefix}`)"),
                format!("traefik.http.routers.{app}.entrypoints"): "web",
                format!("traefik.http.services.{app}.loadbalancer.server.port"): port.to_string(),
            });
            if platform == TargetPlatform::DockerSwarm {
                if let Some(Value::Object(deploy)) = s.get_mut("deploy") {
                    deploy.insert("labels".into(), labels);
                }
            } else {
                s.insert("labels".into(), labels);
            }
        }
    }

    let mut networks = Map::new();
    let driver = (platform == TargetPlatform::DockerSwarm).then_some("overlay");
    if has_frontend {
        networks.insert(
            "frontend".into(),
            driver.map_or_else(|| json!({}), |d| json!({"driver": d})),
        );
    }
    if has_backend {
        let mut backend = Map::new();
        if let Some(d) = driver {
            backend.insert("driver".into(), json!(d));
        }
        if internal_backend {
            backend.insert("internal".into(), json!(true));
        }
        networks.insert("backend".into(), Value::Object(backend));
    }

    let mut document = Map::new();
    document.insert("services".into(), Value::Object(services));
    if !networks.is_empty() {
        document.insert("networks".into(), Value::Object(networks));
    }
    if !volumes.is_empty() {
        document.insert("volumes".into(), Value::Object(volumes));
    }
    if !configs.is_empty() {
        document.insert("configs".into(), Value::Object(configs));
    }

    secrets_needed.sort();
    secrets_needed.dedup();
    if !secrets_needed.is_empty() {
        notes.push(format!(
            "set {} in the environment or an .env file: the configuration only refers to them",
            secrets_needed.join(", ")
        ));
    }
    match platform {
        TargetPlatform::Docker => {}
        TargetPlatform::DockerSwarm => notes.push(
            "docker stack deploy ignores build and depends_on: build and push the app images \
             first; services start in any order and retry"
                .to_owned(),
        ),
        TargetPlatform::Kubernetes => notes.push(
            "for Kubernetes, convert with kompose (kompose convert): push the app images to a \
             registry the cluster reaches; kompose.* labels choose the services' types"
                .to_owned(),
        ),
    }
    if deployed && proxy.is_some() {
        notes.push(
            "the web server listens on plain HTTP: terminate TLS in front of it or give it \
             certificates"
                .to_owned(),
        );
    }
    Value::Object(document)
}

/// The variables that must be set (`${NAME:?…}`) in an interpolated value.
fn collect_required(value: &str, out: &mut Vec<String>) {
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        if let Some((name, _)) = inner.split_once(":?") {
            out.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
}

/// What the web server sends where: `(path prefix, host:port)`. A static site (or the first
/// app) at `/`, the others at `/<name>/`.
fn routes(apps: &[&Planned]) -> Vec<(String, String)> {
    let root = apps
        .iter()
        .position(|a| a.template.key == "static")
        .unwrap_or(0);
    let mut routes: Vec<(String, String)> = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let prefix = if i == root {
            "/".to_owned()
        } else {
            format!("/{}/", app.name)
        };
        routes.push((prefix, format!("{}:{}", app.name, app.template.port)));
    }
    routes.sort_by_key(|(prefix, _)| prefix != "/");
    routes
}

/// nginx's server block for the routes (`$$`: compose must leave nginx's variables alone).
fn nginx_conf(routes: &[(String, String)]) -> String {
    let mut conf = String::from("server {\n    listen 80;\n");
    for (prefix, upstream) in routes {
        let target = if prefix == "/" {
            format!("http://{upstream}")
        } else {
            format!("http://{upstream}/")
        };
        conf.push_str(&format!(
            "    location {prefix} {{\n        proxy_pass {target};\n        proxy_set_header Host $$host;\n        proxy_set_header X-Real-IP $$remote_addr;\n        proxy_set_header X-Forwarded-For $$proxy_add_x_forwarded_for;\n        proxy_set_header X-Forwarded-Proto $$scheme;\n    }}\n"
        ));
    }
    conf.push_str("}\n");
    conf
}

/// `deploy:` (limits, and on swarm and Kubernetes reservations and replicas), restart
/// policies, log rotation, kompose labels.
fn shape_for_platform(
    s: &mut Map<String, Value>,
    req: &GenerationRequest,
    t: &Template,
    replicas: u32,
    (cpus, memory_mb): (f64, u64),
) {
    let deployed = req.environment_type.is_deployed();
    let platform = req.target_platform;
    let mut resources = Map::new();
    resources.insert(
        "limits".into(),
        json!({"cpus": cpus_text(cpus), "memory": memory_text(memory_mb)}),
    );
    let mut deploy = Map::new();
    if platform != TargetPlatform::Docker {
        resources.insert(
            "reservations".into(),
            json!({
                "cpus": cpus_text(((cpus / 2.0 / 0.05 + 1e-9).floor() * 0.05).max(0.05)),
                "memory": memory_text((memory_mb / 2 / 16 * 16).max(16)),
            }),
        );
        deploy.insert("replicas".into(), json!(replicas));
    }
    deploy.insert("resources".into(), Value::Object(resources));
    match platform {
        TargetPlatform::Docker => {
            if deployed {
                s.insert("restart".into(), json!("unless-stopped"));
            }
        }
        TargetPlatform::DockerSwarm => {
            deploy.insert(
                "restart_policy".into(),
                json!({"condition": "any", "delay": "5s", "window": "120s"}),
            );
            // Two copies of a database on one volume must never run at once.
            let order = if t.kind == Kind::App || t.kind == Kind::Proxy {
                "start-first"
            } else {
                "stop-first"
            };
            deploy.insert(
                "update_config".into(),
                json!({"parallelism": 1, "order": order, "failure_action": "rollback"}),
            );
        }
        TargetPlatform::Kubernetes => {
            let entry = s.contains_key("ports");
            let kind = if entry { "loadbalancer" } else { "clusterip" };
            s.insert("labels".into(), json!({"kompose.service.type": kind}));
        }
    }
    s.insert("deploy".into(), Value::Object(deploy));
    if deployed && platform != TargetPlatform::Kubernetes {
        s.insert(
            "logging".into(),
            json!({"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}),
        );
    }
}

/// `no-new-privileges` from standard; read-only root, dropped capabilities and a non-root
/// user at high.
fn shape_for_security(s: &mut Map<String, Value>, level: SecurityLevel, t: &Template) {
    if level >= SecurityLevel::Standard {
        s.insert("security_opt".into(), json!(["no-new-privileges:true"]));
    }
    if level == SecurityLevel::High {
        s.insert("read_only".into(), json!(true));
        let tmpfs: &[&str] = if t.tmpfs.is_empty() {
            &["/tmp"]
        } else {
            t.tmpfs
        };
        s.insert("tmpfs".into(), json!(tmpfs));
        s.insert("cap_drop".into(), json!(["ALL"]));
        if !t.cap_add.is_empty() {
            s.insert("cap_add".into(), json!(t.cap_add));
        }
        if let Some(user) = t.user {
            s.insert("user".into(), json!(user));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::document;
    use super::super::{ResourceConstraints, SecurityLevel};
    use super::*;

    const ISSUE: &str = "a Django app with PostgreSQL and Redis behind nginx";

    fn request(
        description: &str,
        platform: TargetPlatform,
        environment: EnvironmentType,
        security: SecurityLevel,
    ) -> GenerationRequest {
        GenerationRequest {
            description: description.to_owned(),
            target_platform: platform,
            environment_type: environment,
            resource_constraints: None,
            security_level: security,
        }
    }

    fn service<'a>(config: &'a Value, name: &str) -> &'a Map<String, Value> {
        config["services"][name]
            .as_object()
            .unwrap_or_else(|| panic!("no service {name} in {config:#}"))
    }

    fn depends_on(config: &Value, name: &str) -> Vec<String> {
        service(config, name)
            .get("depends_on")
            .and_then(Value::as_object)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every secret-looking variable is interpolated, and no value anywhere carries a
    /// credential in a URL but through interpolation.
    fn assert_no_literal_secret(config: &Value) {
        for (name, s) in document::services(config) {
            for (key, value, path) in document::environment(name, s) {
                let value = value.unwrap_or_default();
                if document::is_secret_name(&key) {
                    assert!(
                        value.starts_with("${"),
                        "{path} holds a literal secret: {value}"
                    );
                }
                if let Some((_, after_scheme)) = value.split_once("://")
                    && let Some((credentials, _)) = after_scheme.split_once('@')
                {
                    // What is left once interpolations are taken out: `user:password`.
                    let mut literal = String::new();
                    let mut rest = credentials;
                    while let Some(start) = rest.find("${") {
                        literal.push_str(&rest[..start]);
                        let end = rest[start..]
                            .find('}')
                            .map_or(rest.len(), |e| start + e + 1);
                        rest = &rest[end..];
                    }
                    literal.push_str(rest);
                    let password = literal.split_once(':').map_or("", |(_, p)| p);
                    assert!(
                        password.is_empty() && credentials.contains(":${"),
                        "{path} has a literal password in {value}"
                    );
                }
            }
        }
    }

    fn assert_pinned(config: &Value) {
        for (name, s) in document::services(config) {
            let image = document::image(s).unwrap_or_else(|| panic!("{name} has no image"));
            let reference = document::ImageRef::parse(image);
            assert!(reference.is_pinned(), "{name}: {image} is not pinned");
        }
    }

    #[test]
    fn the_issues_description_generates_django_postgres_redis_and_nginx_wired_together() {
        let generated = generate(&GenerationRequest::new(ISSUE));
        assert_eq!(generated.services, ["django", "postgres", "redis", "nginx"]);
        assert_eq!(generated.name, "django-postgres-redis-nginx");
        let config = &generated.configuration;
        let names: Vec<&str> = document::services(config).iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), 4);
        for name in ["web", "postgres", "redis", "nginx"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        assert_eq!(depends_on(config, "web"), ["postgres", "redis"]);
        assert_eq!(depends_on(config, "nginx"), ["web"]);
        assert_eq!(
            config["services"]["web"]["depends_on"]["postgres"]["condition"],
            "service_healthy"
        );
        // The database keeps its data in a declared named volume.
        assert_eq!(
            config["services"]["postgres"]["volumes"],
            json!(["postgres_data:/var/lib/postgresql/data"])
        );
        assert!(config["volumes"]["postgres_data"].is_object());
        // The app reaches them by name.
        let env = &config["services"]["web"]["environment"];
        assert!(
            env["DATABASE_URL"]
                .as_str()
                .unwrap()
                .contains("@postgres:5432/")
        );
        assert_eq!(env["REDIS_URL"], "redis://redis:6379/0");
        // nginx proxies to the app.
        let conf = config["configs"]["nginx_conf"]["content"].as_str().unwrap();
        assert!(conf.contains("proxy_pass http://web:8000;"), "{conf}");
        assert_eq!(config["services"]["nginx"]["ports"], json!(["80:80"]));
        // Networks: the web server does not reach the database.
        assert_eq!(config["services"]["nginx"]["networks"], json!(["frontend"]));
        assert_eq!(
            config["services"]["postgres"]["networks"],
            json!(["backend"])
        );
        assert_eq!(
            config["services"]["web"]["networks"],
            json!(["frontend", "backend"])
        );
        assert_no_literal_secret(config);
        assert_pinned(config);
        assert!(
            generated
                .notes
                .iter()
                .any(|n| n.contains("POSTGRES_PASSWORD") && n.contains("DJANGO_SECRET_KEY")),
            "{:?}",
            generated.notes
        );
    }

    #[test]
    fn development_publishes_the_app_and_mounts_its_source() {
        let config = generate(&GenerationRequest::new(ISSUE)).configuration;
        let web = service(&config, "web");
        assert_eq!(web["ports"], json!(["8000:8000"]));
        assert_eq!(web["volumes"], json!(["./web:/app"]));
        assert_eq!(
            web["command"],
            json!(["python", "manage.py", "runserver", "0.0.0.0:8000"])
        );
        assert!(!web.contains_key("restart"));
        assert!(service(&config, "postgres").get("ports").is_none());
    }

    #[test]
    fn production_at_high_security_hardens_every_service() {
        let generated = generate(&request(
            ISSUE,
            TargetPlatform::Docker,
            EnvironmentType::Production,
            SecurityLevel::High,
        ));
        let config = &generated.configuration;
        for (name, s) in document::services(config) {
            assert_eq!(s["read_only"], true, "{name}");
            assert_eq!(s["cap_drop"], json!(["ALL"]), "{name}");
            assert_eq!(s["restart"], "unless-stopped", "{name}");
            assert_eq!(
                s["security_opt"],
                json!(["no-new-privileges:true"]),
                "{name}"
            );
            assert!(s.contains_key("healthcheck"), "{name} has no health check");
            assert!(s.contains_key("tmpfs"), "{name} has no tmpfs");
            assert!(document::has_limits(s), "{name} has no limits");
            for (source, path) in document::volume_sources(name, s) {
                assert!(!document::is_bind_source(&source), "{path} mounts {source}");
            }
        }
        assert_eq!(config["services"]["postgres"]["user"], "postgres");
        assert_eq!(config["services"]["web"]["user"], "1000:1000");
        assert!(config["services"]["web"].get("ports").is_none());
        assert_eq!(
            config["services"]["nginx"]["cap_add"],
            json!(["CHOWN", "SETGID", "SETUID", "NET_BIND_SERVICE"])
        );
        assert_eq!(config["networks"]["backend"]["internal"], true);
        assert_eq!(
            config["services"]["web"]["command"][0], "gunicorn",
            "production runs the app server"
        );
        assert_no_literal_secret(config);
        assert_pinned(config);
    }

    #[test]
    fn the_same_request_generates_the_same_stack() {
        for environment in [EnvironmentType::Development, EnvironmentType::Production] {
            let req = request(
                ISSUE,
                TargetPlatform::DockerSwarm,
                environment,
                SecurityLevel::High,
            );
            assert_eq!(generate(&req), generate(&req.clone()));
        }
    }

    #[test]
    fn swarm_gets_deploy_replicas_reservations_and_a_restart_policy() {
        let config = generate(&request(
            ISSUE,
            TargetPlatform::DockerSwarm,
            EnvironmentType::Production,
            SecurityLevel::Standard,
        ))
        .configuration;
        let web = &config["services"]["web"];
        assert_eq!(web["deploy"]["replicas"], 2);
        assert_eq!(web["deploy"]["restart_policy"]["condition"], "any");
        assert!(web["deploy"]["resources"]["reservations"].is_object());
        assert!(web.get("restart").is_none(), "swarm ignores restart:");
        assert_eq!(config["services"]["postgres"]["deploy"]["replicas"], 1);
        assert_eq!(
            config["services"]["postgres"]["deploy"]["update_config"]["order"],
            "stop-first"
        );
        assert_eq!(config["networks"]["backend"]["driver"], "overlay");
        assert!(
            web.get("read_only").is_none(),
            "standard security keeps a writable root"
        );
    }

    #[test]
    fn kubernetes_labels_the_entry_service_for_kompose() {
        let config = generate(&request(
            ISSUE,
            TargetPlatform::Kubernetes,
            EnvironmentType::Staging,
            SecurityLevel::Basic,
        ))
        .configuration;
        assert_eq!(
            config["services"]["nginx"]["labels"]["kompose.service.type"],
            "loadbalancer"
        );
        assert_eq!(
            config["services"]["postgres"]["labels"]["kompose.service.type"],
            "clusterip"
        );
        assert_eq!(config["services"]["web"]["deploy"]["replicas"], 1);
        assert!(config["services"]["web"].get("security_opt").is_none());
        assert!(config["networks"]["backend"].get("internal").is_none());
    }

    #[test]
    fn resource_constraints_scale_the_limits_to_fit() {
        let mut req = GenerationRequest::new(ISSUE);
        req.resource_constraints = Some(ResourceConstraints {
            max_cpus: Some(1.0),
            max_memory_mb: Some(1024),
        });
        let generated = generate(&req);
        let mut cpus = 0.0;
        let mut memory = 0;
        for (_, s) in document::services(&generated.configuration) {
            let limits = &s["deploy"]["resources"]["limits"];
            cpus += limits["cpus"].as_str().unwrap().parse::<f64>().unwrap();
            memory += limits["memory"]
                .as_str()
                .unwrap()
                .trim_end_matches('M')
                .parse::<u64>()
                .unwrap();
        }
        assert!(cpus <= 1.0 + 1e-9, "{cpus}");
        assert!(memory <= 1024, "{memory}");
        assert!(generated.notes.iter().any(|n| n.contains("max_cpus")));
        // Without constraints the templates' defaults exceed both.
        let free = generate(&GenerationRequest::new(ISSUE));
        assert_eq!(
            free.configuration["services"]["postgres"]["deploy"]["resources"]["limits"],
            json!({"cpus": "1", "memory": "1024M"})
        );
    }

    #[test]
    fn other_runtimes_and_services_are_recognized_in_order_of_kind_and_mention() {
        let generated = generate(&GenerationRequest::new(
            "An Express API with MongoDB and a React frontend, RabbitMQ for jobs, behind Caddy",
        ));
        assert_eq!(
            generated.services,
            ["node", "static", "mongodb", "rabbitmq", "caddy"]
        );
        let config = &generated.configuration;
        assert!(config["services"]["node"]["environment"]["MONGODB_URL"].is_string());
        assert!(config["services"]["node"]["environment"]["AMQP_URL"].is_string());
        assert_eq!(depends_on(config, "frontend"), Vec::<String>::new());
        assert_eq!(depends_on(config, "caddy"), ["frontend", "node"]);
        // Two apps in development publish distinct host ports.
        assert_eq!(config["services"]["node"]["ports"], json!(["3000:3000"]));
        assert_eq!(config["services"]["frontend"]["ports"], json!(["8080:80"]));
        assert_eq!(config["services"]["caddy"]["ports"], json!(["80:80"]));
        assert_no_literal_secret(config);
        assert_pinned(config);
    }

    #[test]
    fn a_negated_service_is_left_out_and_unknown_ones_are_noted() {
        let generated = generate(&GenerationRequest::new(
            "a Flask service with MySQL, without Redis, feeding Kafka",
        ));
        assert_eq!(generated.services, ["flask", "mysql"]);
        let notes = generated.notes.join("\n");
        assert!(notes.contains("left out as asked: redis"), "{notes}");
        assert!(
            notes.contains("not in the catalog, so not generated: kafka"),
            "{notes}"
        );
    }

    #[test]
    fn an_unnamed_reverse_proxy_is_nginx_and_nothing_recognized_is_a_static_site() {
        let proxied = generate(&GenerationRequest::new(
            "a Rails app behind a reverse proxy",
        ));
        assert_eq!(proxied.services, ["rails", "nginx"]);
        assert!(proxied.notes.iter().any(|n| n.contains("nginx assumed")));
        let nothing = generate(&GenerationRequest::new("something lovely for my aunt"));
        assert_eq!(nothing.services, ["static"]);
        assert_eq!(nothing.name, "static-site");
        assert!(
            nothing
                .notes
                .iter()
                .any(|n| n.contains("no service of the catalog"))
        );
    }

    #[test]
    fn a_database_alone_is_published_on_loopback_in_development() {
        let generated = generate(&GenerationRequest::new("just a postgres database please"));
        assert_eq!(generated.services, ["postgres"]);
        assert_eq!(
            generated.configuration["services"]["postgres"]["ports"],
            json!(["127.0.0.1:5432:5432"])
        );
    }

    #[test]
    fn traefik_routes_by_labels_on_the_app() {
        let config =
            generate(&GenerationRequest::new("a FastAPI service behind Traefik")).configuration;
        assert_eq!(
            config["services"]["web"]["labels"]["traefik.http.services.web.loadbalancer.server.port"],
            "8000"
        );
        assert_eq!(
            config["services"]["traefik"]["healthcheck"]["test"],
            json!(["CMD", "traefik", "healthcheck", "--ping"])
        );
    }
}
