{{/*
The Deployment and Service of one gRPC service (registry, sessions, jobs, inference).
Call with a dict:
  root       the top-level context ($)
  component  registry | sessions | jobs | inference (also the key of its values)
  service    the STEERLAB_<SERVICE>_* prefix of its server variables
  command    the container command, e.g. (list "steerlab" "registry" "serve")
  env        further variables (YAML list, as text)
  resources  the container's resources (default: the component's `resources`)
  volumes    further volumes and their mounts (YAML lists, as text; optional)
  mounts
*/}}
{{- define "steerlab.serverDeployment" -}}
{{- $root := .root }}
{{- $values := get $root.Values .component }}
{{- $ctx := dict "root" $root "component" .component }}
{{- $probePort := ternary $root.Values.tls.healthPort $values.port $root.Values.tls.enabled }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "steerlab.componentName" $ctx }}
  labels:
    {{- include "steerlab.labels" $ctx | nindent 4 }}
spec:
  {{- if not $values.autoscaling.enabled }}
  replicas: {{ $values.replicas }}
  {{- end }}
  {{- with $values.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "steerlab.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "steerlab.labels" $ctx | nindent 8 }}
      annotations:
        {{- include "steerlab.podAnnotations" (dict "root" $root "metricsPort" $values.metricsPort) | nindent 8 }}
    spec:
      {{- include "steerlab.podSpecCommon" (dict "root" $root "values" $values) | nindent 6 }}
      {{- with $values.terminationGracePeriodSeconds }}
      terminationGracePeriodSeconds: {{ . }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "steerlab.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: {{ toJson .command }}
          env:
            - name: STEERLAB_{{ .service }}_PORT
              value: {{ $values.port | quote }}
            - name: STEERLAB_{{ .service }}_METRICS_PORT
              value: {{ $values.metricsPort | quote }}
            {{- if $root.Values.tls.enabled }}
            - name: STEERLAB_{{ .service }}_HEALTH_PORT
              value: {{ $root.Values.tls.healthPort | quote }}
            {{- end }}
            {{- .env | nindent 12 }}
            {{- with include "steerlab.extraEnv" (dict "root" $root "values" $values) }}
            {{- . | nindent 12 }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: {{ $values.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $values.metricsPort }}
              protocol: TCP
            {{- if $root.Values.tls.enabled }}
            - name: health
              containerPort: {{ $root.Values.tls.healthPort }}
              protocol: TCP
            {{- end }}
          # Kubernetes' own gRPC health checks (grpc.health.v1), on the plaintext health port
          # with TLS. The port opens once the service has loaded; the startup probe holds the
          # other two off until then.
          startupProbe:
            grpc:
              port: {{ $probePort }}
            periodSeconds: {{ $values.startupProbe.periodSeconds }}
            failureThreshold: {{ $values.startupProbe.failureThreshold }}
          readinessProbe:
            grpc:
              port: {{ $probePort }}
            periodSeconds: 10
            failureThreshold: 3
          livenessProbe:
            grpc:
              port: {{ $probePort }}
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          resources:
            {{- toYaml (.resources | default $values.resources) | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "steerlab.tmpMount" . | nindent 12 }}
            {{- with include "steerlab.tlsMount" $root }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "steerlab.tmpVolume" . | nindent 8 }}
        {{- with include "steerlab.tlsVolume" $root }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "steerlab.componentName" $ctx }}
  labels:
    {{- include "steerlab.labels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "steerlab.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $values.port }}
      targetPort: grpc
      protocol: TCP
    - name: metrics
      port: {{ $values.metricsPort }}
      targetPort: metrics
      protocol: TCP
{{- end }}
