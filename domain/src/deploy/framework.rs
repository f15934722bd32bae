//! The frameworks a deployment may run: the PaaS seed's catalog (`GET /frameworks`), each with
//! what the `process` driver runs to install and start an app of it. The commands run with
//! `sh -c` in the deployment's directory; `$PORT` is the port the driver allocated on
//! 127.0.0.1 and `$HOST` is `127.0.0.1`.

use serde::Serialize;

/// One framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Framework {
    /// Its key, as deployments name it (`django`).
    #[serde(skip)]
    pub key: &'static str,
    /// Its display name.
    pub name: &'static str,
    /// Its language.
    pub language: &'static str,
    /// The version the platform provisions.
    pub version: &'static str,
    /// The port its apps listen on inside a VM or container.
    pub port: u16,
    /// How the platform installs the framework on a machine (the seed's field).
    pub install_cmd: &'static str,
    /// What the `process` driver runs in the app's checkout before starting it (dependencies,
    /// a build step).
    pub build_cmd: &'static str,
    /// What starts the app, listening on `$HOST:$PORT`.
    pub start_cmd: &'static str,
}

/// Every framework, in the catalog's order.
pub const CATALOG: &[Framework] = &[
    Framework {
        key: "django",
        name: "Django",
        language: "python",
        version: "4.2",
        port: 8000,
        install_cmd: "pip install django gunicorn",
        build_cmd: "python3 -m venv .venv && .venv/bin/pip install --quiet -r requirements.txt gunicorn",
        start_cmd: "exec .venv/bin/gunicorn --bind \"$HOST:$PORT\" \"$(dirname \"$(ls */wsgi.py | head -n 1)\").wsgi\"",
    },
    Framework {
        key: "laravel",
        name: "Laravel",
        language: "php",
        version: "10.x",
        port: 8000,
        install_cmd: "composer global require laravel/installer",
        build_cmd: "composer install --no-dev --no-interaction --prefer-dist",
        start_cmd: "exec php artisan serve --host=\"$HOST\" --port=\"$PORT\"",
    },
    Framework {
        key: "flask",
        name: "Flask",
        language: "python",
        version: "3.0",
        port: 5000,
        install_cmd: "pip install flask gunicorn",
        build_cmd: "python3 -m venv .venv && .venv/bin/pip install --quiet -r requirements.txt gunicorn",
        start_cmd: "exec .venv/bin/gunicorn --bind \"$HOST:$PORT\" \"${APP_MODULE:-app:app}\"",
    },
    Framework {
        key: "fastapi",
        name: "FastAPI",
        language: "python",
        version: "0.115",
        port: 8000,
        install_cmd: "pip install fastapi uvicorn",
        build_cmd: "python3 -m venv .venv && .venv/bin/pip install --quiet -r requirements.txt uvicorn",
        start_cmd: "exec .venv/bin/uvicorn \"${APP_MODULE:-main:app}\" --host \"$HOST\" --port \"$PORT\"",
    },
    Framework {
        key: "express",
        name: "Express",
        language: "javascript",
        version: "4.x",
        port: 3000,
        install_cmd: "npm install express",
        build_cmd: "npm ci --omit=dev || npm install --omit=dev",
        start_cmd: "exec npm start",
    },
    Framework {
        key: "next",
        name: "Next.js",
        language: "javascript",
        version: "14",
        port: 3000,
        install_cmd: "npm install next react react-dom",
        build_cmd: "(npm ci || npm install) && npm run build",
        start_cmd: "exec npx next start -H \"$HOST\" -p \"$PORT\"",
    },
    Framework {
        key: "rails",
        name: "Ruby on Rails",
        language: "ruby",
        version: "7.1",
        port: 3000,
        install_cmd: "gem install rails",
        build_cmd: "bundle install",
        start_cmd: "exec bundle exec rails server -b \"$HOST\" -p \"$PORT\"",
    },
    Framework {
        key: "spring-boot",
        name: "Spring Boot",
        language: "java",
        version: "3.2",
        port: 8080,
        install_cmd: "apt-get install -y openjdk-17-jdk maven",
        build_cmd: "./mvnw --quiet -DskipTests package",
        start_cmd: "exec java -jar \"$(ls target/*.jar | head -n 1)\" --server.address=\"$HOST\" --server.port=\"$PORT\"",
    },
    Framework {
        key: "go",
        name: "Go",
        language: "go",
        version: "1.22",
        port: 8080,
        install_cmd: "apt-get install -y golang",
        build_cmd: "go build -o .atelier-app .",
        start_cmd: "exec ./.atelier-app",
    },
    Framework {
        key: "static",
        name: "Static site",
        language: "html",
        version: "-",
        port: 80,
        install_cmd: "apt-get install -y nginx",
        build_cmd: "true",
        start_cmd: "if [ -d public ]; then cd public; fi; exec python3 -m http.server \"$PORT\" --bind \"$HOST\"",
    },
];

/// The framework with this key.
pub fn framework(key: &str) -> Option<&'static Framework> {
    CATALOG.iter().find(|f| f.key == key)
}

/// The keys, for messages.
pub fn keys() -> String {
    CATALOG.iter().map(|f| f.key).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_has_the_seeds_frameworks_and_what_a_user_expects() {
        let django = framework("django").unwrap();
        assert_eq!(
            (django.name, django.language, django.version, django.port),
            ("Django", "python", "4.2", 8000)
        );
        assert_eq!(django.install_cmd, "pip install django gunicorn");
        let laravel = framework("laravel").unwrap();
        assert_eq!(
            laravel.install_cmd,
            "composer global require laravel/installer"
        );
        for key in [
            "flask",
            "fastapi",
            "express",
            "next",
            "rails",
            "spring-boot",
            "static",
        ] {
            let f = framework(key).unwrap_or_else(|| panic!("{key} is missing"));
            assert!(!f.start_cmd.is_empty() && !f.build_cmd.is_empty());
        }
        assert!(framework("cobol").is_none());
        let mut seen = std::collections::HashSet::new();
        assert!(
            CATALOG.iter().all(|f| seen.insert(f.key)),
            "keys are unique"
        );
    }
}
