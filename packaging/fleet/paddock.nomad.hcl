# Nomad job: paddock as PID 1 of a Docker task, supervising the apps written into the task's
# local/ directory by Nomad templates. Nomad places and moves the task between hosts; paddock
# supervises, restarts and health-checks the processes inside it.
#
#   nomad job run packaging/fleet/paddock.nomad.hcl
#   nomad alloc exec -task paddock <alloc-id> paddock status
#
# The image is packaging/container/Containerfile pushed to a registry the clients can pull from.
job "paddock-apps" {
  datacenters = ["dc1"]
  type        = "service"

  group "apps" {
    count = 1

    network {
      port "http" {
        to = 8080
      }
    }

    task "paddock" {
      driver = "docker"

      config {
        image = "registry.example.com/paddock:0.1.0"
        ports = ["http"]
        # paddock is PID 1 and reaps orphans itself: no tini in front of it.
        init = false
        # The app files from the templates below, instead of the image's own.
        args = ["serve", "--config", "/local/apps"]
      }

      # Nomad sends kill_signal to PID 1 (paddock), which stops the apps in reverse dependency
      # order; kill_timeout must cover the longest stop_timeout of the apps.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      template {
        destination = "local/apps/web.toml"
        # After `nomad job run` with a changed template, SIGHUP makes paddock apply it (update):
        # only the changed app restarts.
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-TOML
          command = ["busybox", "httpd", "-f", "-p", "8080", "-h", "/srv/www"]
          essential = true

          [readiness]
          health = true

          [health]
          kind = "http"
          url = "http://127.0.0.1:8080/"

          [restart]
          policy = "always"

          [logs]
          stdout = "inherit"
        TOML
      }

      template {
        destination   = "local/apps/ticker.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-TOML
          command = ["busybox", "sh", "-c", "while :; do echo tick; sleep 10; done"]
          after = ["web"]

          [logs]
          stdout = "inherit"
        TOML
      }

      service {
        name     = "paddock-web"
        port     = "http"
        provider = "nomad"

        check {
          type     = "http"
          path     = "/"
          interval = "10s"
          timeout  = "2s"
        }
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
