{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "nextbest.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: <release>-nextbest unless the release already says it. */}}
{{- define "nextbest.fullname" -}}
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

{{- define "nextbest.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nextbest.labels" -}}
helm.sh/chart: {{ include "nextbest.chart" . }}
{{ include "nextbest.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nextbest
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selects the service pods only (jobs and the dev Redis add their own component). */}}
{{- define "nextbest.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nextbest.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nextbest.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nextbest.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nextbest.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{- define "nextbest.secretName" -}}
{{- default (printf "%s-api-keys" (include "nextbest.fullname" .)) .Values.apiKeys.existingSecret }}
{{- end }}

{{- define "nextbest.redisSecretName" -}}
{{- default (printf "%s-redis" (include "nextbest.fullname" .)) .Values.redis.existingSecret }}
{{- end }}

{{- define "nextbest.devRedisName" -}}
{{- printf "%s-redis" (include "nextbest.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Does the app get a NEXTBEST_REDIS_URL at all? */}}
{{- define "nextbest.redisEnabled" -}}
{{- if or .Values.redis.dev.enabled .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{- define "nextbest.pvcName" -}}
{{- default (printf "%s-data" (include "nextbest.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/*
The environment shared by the service and the jobs: settings from the ConfigMap, the
Redis URL (inline, from a Secret, or the in-chart dev Redis) and the API keys.
*/}}
{{- define "nextbest.env" -}}
- name: NEXTBEST_DATA_DIR
  value: {{ printf "%s/data" .Values.persistence.mountPath | quote }}
- name: NEXTBEST_MODELS_DIR
  value: {{ printf "%s/models" .Values.persistence.mountPath | quote }}
{{- if .Values.catalog.enabled }}
- name: NEXTBEST_CATALOG_PATH
  value: /etc/nextbest/catalog/catalog.json
{{- end }}
{{- if .Values.redis.dev.enabled }}
- name: NEXTBEST_REDIS_URL
  value: {{ printf "redis://%s:%d/0" (include "nextbest.devRedisName" .) (int .Values.redis.dev.port) | quote }}
{{- else if .Values.redis.existingSecret }}
- name: NEXTBEST_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.url }}
- name: NEXTBEST_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "nextbest.redisSecretName" . }}
      key: redis-url
{{- end }}
{{- if .Values.apiKeys.mountAsFile }}
{{- if not .Values.apiKeys.existingSecret }}
{{- fail "apiKeys.mountAsFile needs apiKeys.existingSecret (a Secret holding the key file)" }}
{{- end }}
- name: NEXTBEST_API_KEYS_FILE
  value: {{ printf "%s/%s" .Values.apiKeys.mountPath .Values.apiKeys.existingSecretKey | quote }}
{{- else if or .Values.apiKeys.existingSecret .Values.apiKeys.keys }}
- name: NEXTBEST_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "nextbest.secretName" . }}
      key: {{ .Values.apiKeys.existingSecretKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "nextbest.envFrom" -}}
- configMapRef:
    name: {{ include "nextbest.fullname" . }}-settings
{{- end }}

{{/* Pod- and container-level security contexts, shared by all workloads. */}}
{{- define "nextbest.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}
{{- define "nextbest.securityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end }}

{{/* The data volume (models + data dir) and the writable /tmp. */}}
{{- define "nextbest.volumes" -}}
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "nextbest.pvcName" . }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.persistence.size }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if .Values.catalog.enabled }}
- name: catalog
  configMap:
    name: {{ default (printf "%s-catalog" (include "nextbest.fullname" .)) .Values.catalog.existingConfigMap }}
{{- end }}
{{- end }}

{{- define "nextbest.volumeMounts" -}}
- name: data
  mountPath: {{ .Values.persistence.mountPath }}
- name: tmp
  mountPath: /tmp
{{- if .Values.catalog.enabled }}
- name: catalog
  mountPath: /etc/nextbest/catalog
  readOnly: true
{{- end }}
{{- end }}
