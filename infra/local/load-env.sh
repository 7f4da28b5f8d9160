# Sourced by the Makefile: export every KEY=VALUE of dev.env unless the environment already
# sets KEY, so a CI job or a second checkout can move the whole stack to other ports.
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in ''|'#'*) continue ;; esac
  key=${line%%=*}
  if [ -z "${!key+x}" ]; then export "$key=${line#*=}"; else export "$key"; fi
done < "$(dirname "${BASH_SOURCE[0]}")/dev.env"
