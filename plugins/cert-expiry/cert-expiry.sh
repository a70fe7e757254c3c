#!/bin/sh
# incidentd source plugin (protocol 1): days left on TLS certificates, as metric events.
# Usage: cert-expiry.sh FILE... ; reads incidentd's lines on stdin, reports at start and on
# every tick, and stops on shutdown or end of input. Needs openssl and date.
name="${INCIDENTD_PLUGIN:-cert-expiry}"
printf '{"type":"hello","name":"%s","protocol":1}\n' "$name"

# JSON string escaping for file names (backslash and double quote).
esc() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }

report() {
  now=$(date +%s)
  for f in "$@"; do
    if ! end=$(openssl x509 -enddate -noout -in "$f" 2>/dev/null); then
      printf '{"type":"log","level":"warn","message":"cannot read certificate %s"}\n' "$(esc "$f")"
      continue
    fi
    end=${end#notAfter=}
    if ! end_s=$(date -u -d "$end" +%s 2>/dev/null); then
      printf '{"type":"log","level":"warn","message":"cannot parse the end date of %s"}\n' "$(esc "$f")"
      continue
    fi
    days=$(( (end_s - now) / 86400 ))
    printf '{"type":"event","event":{"kind":"metric","message":"%s expires in %s days","value":%s,"labels":{"metric":"tls_cert_days_left","file":"%s"}}}\n' \
      "$(esc "$f")" "$days" "$days" "$(esc "$f")"
  done
}

report "$@"
while IFS= read -r line; do
  case "$line" in
    *'"type":"tick"'*) report "$@" ;;
    *'"type":"shutdown"'*) exit 0 ;;
  esac
done
