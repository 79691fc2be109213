{{/* Names ----------------------------------------------------------------------------- */}}

{{- define "steerlab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; objects are named "<fullname>-<component>". */}}
{{- define "steerlab.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>"; call with (dict "root" $ "component" "registry"). */}}
{{- define "steerlab.componentName" -}}
{{- printf "%s-%s" (include "steerlab.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "steerlab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "steerlab.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels ---------------------------------------------------------------------------- */}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "registry"),
     or without a component for objects the whole release shares. */}}
{{- define "steerlab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "steerlab.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* All labels of one component's objects; same arguments. */}}
{{- define "steerlab.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "steerlab.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: steerlab
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Pods ------------------------------------------------------------------------------ */}}

{{- define "steerlab.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* What every SteerLab pod spec shares; call with (dict "root" $ "values" .Values.registry). */}}
{{- define "steerlab.podSpecCommon" -}}
serviceAccountName: {{ include "steerlab.serviceAccountName" .root }}
# The services read STEERLAB_<SERVICE>_PORT; Kubernetes' service links would set variables of
# that very name (tcp://...) for a Service called "steerlab-<service>".
enableServiceLinks: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod annotations: the user's, and scrape hints for a Prometheus without the Operator. */}}
{{- define "steerlab.podAnnotations" -}}
{{- $scrape := dict "prometheus.io/scrape" "true" "prometheus.io/port" (toString .metricsPort) "prometheus.io/path" "/metrics" }}
{{- toYaml (merge (deepCopy .root.Values.podAnnotations) $scrape) }}
{{- end }}

{{/* The Secret and key holding STEERLAB_DATABASE_URL / STEERLAB_BROKER_URL. */}}
{{- define "steerlab.databaseUrlRef" -}}
{{- if .Values.postgresql.enabled -}}
name: {{ include "steerlab.componentName" (dict "root" . "component" "stores") }}
key: database-url
{{- else -}}
name: {{ .Values.connections.existingSecret }}
key: {{ .Values.connections.databaseUrlKey }}
{{- end }}
{{- end }}

{{- define "steerlab.brokerUrlRef" -}}
{{- if .Values.redis.enabled -}}
name: {{ include "steerlab.componentName" (dict "root" . "component" "stores") }}
key: broker-url
{{- else -}}
name: {{ .Values.connections.existingSecret }}
key: {{ .Values.connections.brokerUrlKey }}
{{- end }}
{{- end }}

{{- define "steerlab.databaseEnv" -}}
- name: STEERLAB_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- include "steerlab.databaseUrlRef" . | nindent 6 }}
{{- end }}

{{- define "steerlab.brokerEnv" -}}
- name: STEERLAB_BROKER_URL
  valueFrom:
    secretKeyRef:
      {{- include "steerlab.brokerUrlRef" . | nindent 6 }}
{{- end }}

{{/* The Secret with the services' credential: the user's, or in keys mode the generated one. */}}
{{- define "steerlab.authSecret" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if eq .Values.auth.mode "keys" }}
{{- include "steerlab.componentName" (dict "root" . "component" "auth") }}
{{- end }}
{{- end }}

{{/* STEERLAB_AUTH and STEERLAB_TOKEN (the services' credential); call with the root. */}}
{{- define "steerlab.authEnv" -}}
- name: STEERLAB_AUTH
  value: {{ .Values.auth.mode | quote }}
{{- with include "steerlab.authSecret" . }}
- name: STEERLAB_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.auth.tokenKey }}
{{- end }}
{{- end }}

{{/* The Secret with the services' certificate (tls.enabled). */}}
{{- define "steerlab.tlsSecret" -}}
{{- .Values.tls.existingSecret | default (include "steerlab.componentName" (dict "root" . "component" "tls")) }}
{{- end }}

{{/* The TLS files' variables: to serve, and to call the other services; call with the root. */}}
{{- define "steerlab.tlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: STEERLAB_TLS_CERT
  value: /etc/steerlab/tls/tls.crt
- name: STEERLAB_TLS_KEY
  value: /etc/steerlab/tls/tls.key
- name: STEERLAB_TLS_CA
  value: /etc/steerlab/tls/ca.crt
{{- if .Values.tls.mutual }}
- name: STEERLAB_TLS_CLIENT_CA
  value: /etc/steerlab/tls/ca.crt
- name: STEERLAB_TLS_CLIENT_CERT
  value: /etc/steerlab/tls/tls.crt
- name: STEERLAB_TLS_CLIENT_KEY
  value: /etc/steerlab/tls/tls.key
{{- end }}
{{- end }}
{{- end }}

{{- define "steerlab.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "steerlab.tlsSecret" . }}
{{- end }}
{{- end }}

{{- define "steerlab.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/steerlab/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* The auth and TLS variables, then the component's own `env`; call with (dict "root" $ "values" ...). */}}
{{- define "steerlab.extraEnv" -}}
{{ include "steerlab.authEnv" .root }}
{{- with include "steerlab.tlsEnv" .root }}
{{ . }}
{{- end }}
{{- range $name, $value := .values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* /tmp: caches of torch, DeepSpeed and Hugging Face (the image points them there). */}}
{{- define "steerlab.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "steerlab.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* The model volume and its mount, when one is configured (inference and workers). */}}
{{- define "steerlab.modelVolume" -}}
{{- with .Values.model.volume -}}
- name: model
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "steerlab.modelMount" -}}
{{- if .Values.model.volume -}}
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/* HOST:PORT of a component's Service; call with (dict "root" $ "component" "registry"). */}}
{{- define "steerlab.address" -}}
{{- printf "%s:%v" (include "steerlab.componentName" .) (get .root.Values .component).port }}
{{- end }}
