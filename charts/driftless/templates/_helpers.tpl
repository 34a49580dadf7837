{{/* Chart name, overridable with nameOverride. */}}
{{- define "driftless.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Resource name prefix. Truncated to 54 characters so that "-operator" still fits in 63
(the DNS label limit of Service names).
*/}}
{{- define "driftless.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "driftless.operator.fullname" -}}
{{ include "driftless.fullname" . }}-operator
{{- end }}

{{- define "driftless.agent.fullname" -}}
{{ include "driftless.fullname" . }}-agent
{{- end }}

{{- define "driftless.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels common to every resource. */}}
{{- define "driftless.labels" -}}
helm.sh/chart: {{ include "driftless.chart" . }}
app.kubernetes.io/name: {{ include "driftless.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: driftless
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "driftless.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftless.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "driftless.componentLabels" -}}
{{ include "driftless.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "driftless.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "driftless.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "driftless.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "driftless.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository:tag" with the tag defaulting to the chart's appVersion; call with .Values.x.image and $. */}}
{{- define "driftless.image" -}}
{{- $image := index . 0 }}
{{- $ctx := index . 1 }}
{{- printf "%s:%s" $image.repository (default $ctx.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* Name of the ConfigMap holding the agent's config dir, empty when there is none. */}}
{{- define "driftless.agent.configMapName" -}}
{{- if .Values.agent.config.existingConfigMap }}
{{- .Values.agent.config.existingConfigMap }}
{{- else if .Values.agent.config.files }}
{{- include "driftless.agent.fullname" . }}-config
{{- end }}
{{- end }}

{{/* Namespace the agents read policy Secrets from: agent.secretsNamespace or the release namespace. */}}
{{- define "driftless.agent.secretsNamespace" -}}
{{- default .Release.Namespace .Values.agent.secretsNamespace }}
{{- end }}

{{/* "true" when the agent takes its policies from the API server (agent.source=kubernetes), else empty. */}}
{{- define "driftless.agent.clusterMode" -}}
{{- if and .Values.agent.enabled (eq .Values.agent.source "kubernetes") }}true{{ end }}
{{- end }}

{{/*
The namespaces whose DriftScans the operator acts on, comma-separated: scanRunner.namespaces,
or the release namespace.
*/}}
{{- define "driftless.scanNamespaces" -}}
{{- join "," (.Values.scanRunner.namespaces | default (list .Release.Namespace)) -}}
{{- end }}
