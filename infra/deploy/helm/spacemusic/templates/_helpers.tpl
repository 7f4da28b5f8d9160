{{- define "spacemusic.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "spacemusic.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels for one component (web, worker-pipeline, migrate, ...) */}}
{{- define "spacemusic.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository@digest when the release pipeline passes one (immutable), else the tag. */}}
{{- define "spacemusic.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Pod annotations every pod gets: Linkerd injection (mTLS, golden metrics). */}}
{{- define "spacemusic.podAnnotations" -}}
linkerd.io/inject: enabled
{{- end -}}

{{/* Secrets as secretKeyRefs, never values. */}}
{{- define "spacemusic.secretEnv" -}}
{{- range $name, $ref := .Values.secrets }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
      {{- if $ref.optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end -}}

{{/* Settings that depend on the process, not the environment. */}}
{{- define "spacemusic.processEnv" -}}
- name: WEB_HOST
  value: {{ .Values.bindHost | quote }}
- name: WEB_PORT
  value: {{ .Values.web.port | quote }}
- name: METRICS_HOST
  value: {{ .Values.bindHost | quote }}
- name: METRICS_PORT
  value: {{ .Values.metricsPort | quote }}
{{- end -}}

{{- define "spacemusic.podSecurity" -}}
serviceAccountName: {{ include "spacemusic.fullname" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* A writable /tmp: the root filesystem is read-only; Faust and WeasyPrint write temp files. */}}
{{- define "spacemusic.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}
{{- define "spacemusic.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Probes on the real endpoints. The startup probe allows STARTUP_RETRY_SECONDS, the
     time a process waits for Kafka/Postgres/registry before giving up. */}}
{{- define "spacemusic.probes" -}}
{{- $retry := int .root.Values.config.STARTUP_RETRY_SECONDS -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 5
  failureThreshold: {{ add1 (div $retry 5) }}
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}
