{{/*
Chart name, truncated to the 63 characters Kubernetes names allow.
*/}}
{{- define "pilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name when it already contains the chart name, else release-chart.
*/}}
{{- define "pilot.fullname" -}}
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

{{- define "pilot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels (immutable on a Deployment: keep this set stable). `app: pilot` is the label Istio's
tooling uses to find pilot pods.
*/}}
{{- define "pilot.selectorLabels" -}}
app: pilot
app.kubernetes.io/name: {{ include "pilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "pilot.labels" -}}
{{ include "pilot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: pilot
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "pilot.chart" . }}
{{- end }}

{{- define "pilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pilot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap mounted as the config directory.
*/}}
{{- define "pilot.configMapName" -}}
{{- default (printf "%s-config" (include "pilot.fullname" .)) .Values.existingConfigMap }}
{{- end }}

{{/*
Whether a PodDisruptionBudget is rendered: when enabled, or whenever there is more than one replica.
*/}}
{{- define "pilot.pdbEnabled" -}}
{{- if or .Values.podDisruptionBudget.enabled (gt (int .Values.replicaCount) 1) }}true{{- end }}
{{- end }}
