{{/*
Apply the istiod-style `pilot:` block over the top-level values (`--set pilot.env.X=1` means `--set env.X=1`).
Every template includes this first; it is idempotent, so the order helm renders templates in does not
matter. Unlike sprig's merge, a false or empty value under `pilot:` does override.
*/}}
{{- define "pilot.applyOverrides" -}}
{{- if .Values.pilot }}
{{- include "pilot.mergeInto" (list .Values .Values.pilot) }}
{{- end }}
{{- end }}

{{- define "pilot.mergeInto" -}}
{{- $dst := index . 0 }}
{{- range $key, $value := index . 1 }}
{{- if and (kindIs "map" $value) (kindIs "map" (index $dst $key)) }}
{{- include "pilot.mergeInto" (list (index $dst $key) $value) }}
{{- else }}
{{- $_ := set $dst $key $value }}
{{- end }}
{{- end }}
{{- end }}

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

{{/*
Name of a cluster-scoped object (ClusterRole, ClusterRoleBinding, ValidatingWebhookConfiguration): the
namespace is part of it, so releases of the same name in two namespaces do not collide.
*/}}
{{- define "pilot.clusterName" -}}
{{- printf "%s-%s" (include "pilot.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
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
Whether pilot reads a config directory: when files are given, or when Kubernetes is off (then the
directory is all it reads, even while still empty).
*/}}
{{- define "pilot.configDirEnabled" -}}
{{- if or .Values.config .Values.existingConfigMap (not .Values.kubernetes.enabled) }}true{{- end }}
{{- end }}

{{/*
Whether pilot writes status on config objects (PILOT_ENABLE_STATUS), which is what the status RBAC is for.
*/}}
{{- define "pilot.statusEnabled" -}}
{{- $value := index .Values.env "PILOT_ENABLE_STATUS" | default "false" | toString | lower }}
{{- if has $value (list "true" "1") }}true{{- end }}
{{- end }}

{{- define "pilot.webhookSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "pilot.fullname" .)) .Values.webhook.certSecretName }}
{{- end }}

{{/*
Whether a PodDisruptionBudget is rendered: when enabled, or whenever there can be more than one replica.
*/}}
{{- define "pilot.pdbEnabled" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if .Values.autoscaleEnabled }}
{{- $replicas = int .Values.autoscaleMin }}
{{- end }}
{{- if or .Values.podDisruptionBudget.enabled (gt $replicas 1) }}true{{- end }}
{{- end }}

{{/*
The Istio networking kinds pilot reads: CRDs, RBAC rules and webhook rules are all made from this list.
*/}}
{{- define "pilot.istioKinds" -}}
kinds:
  - {kind: ServiceEntry, plural: serviceentries, singular: serviceentry, shortNames: [se], group: networking}
  - {kind: WorkloadEntry, plural: workloadentries, singular: workloadentry, shortNames: [we], group: networking}
  - {kind: VirtualService, plural: virtualservices, singular: virtualservice, shortNames: [vs], group: networking}
  - {kind: DestinationRule, plural: destinationrules, singular: destinationrule, shortNames: [dr], group: networking}
  - {kind: Gateway, plural: gateways, singular: gateway, shortNames: [gw], group: networking}
  - {kind: Sidecar, plural: sidecars, singular: sidecar, shortNames: [], group: networking}
  - {kind: PeerAuthentication, plural: peerauthentications, singular: peerauthentication, shortNames: [pa], group: security}
{{- end }}

{{/*
The Istio API groups pilot reads and the versions each is served at (one schema per group).
*/}}
{{- define "pilot.istioGroups" -}}
groups:
  - {name: networking, group: networking.istio.io, versions: [v1, v1beta1, v1alpha3]}
  - {name: security, group: security.istio.io, versions: [v1, v1beta1]}
{{- end }}

{{/* The plurals of one group's kinds: include "pilot.istioResources" (list $ "networking") */}}
{{- define "pilot.istioResources" -}}
{{- $root := index . 0 }}
{{- $group := index . 1 }}
{{- range (include "pilot.istioKinds" $root | fromYaml).kinds }}
{{- if eq .group $group }}
- {{ .plural }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Paths inside the pod.
*/}}
{{- define "pilot.configDir" -}}/etc/pilot/config{{- end }}
{{- define "pilot.webhookCertDir" -}}/var/run/secrets/pilot-webhook{{- end }}
{{- define "pilot.xdsCertDir" -}}/var/run/secrets/pilot-xds{{- end }}
{{- define "pilot.xdsSecretName" -}}{{ default (printf "%s-xds-tls" (include "pilot.fullname" .)) .Values.secureXds.certSecretName }}{{- end }}
{{- define "pilot.kubeconfigDir" -}}/var/run/secrets/remote{{- end }}
{{- define "pilot.meshConfigDir" -}}/etc/pilot/mesh{{- end }}
{{- define "pilot.meshConfigFile" -}}mesh.yaml{{- end }}

{{/*
The mesh config file pilot reads at start (--discovery-selectors takes a mesh config holding
discoverySelectors); only the fields pilot reads.
*/}}
{{- define "pilot.meshConfigYaml" -}}
{{- dict "discoverySelectors" .Values.meshConfig.discoverySelectors | toYaml }}
{{- end }}

{{- define "pilot.meshConfigEnabled" -}}
{{- if and .Values.kubernetes.enabled .Values.meshConfig.discoverySelectors }}true{{- end }}
{{- end }}

{{/*
The container's args: pilot's global flags, then `serve` and its flags (the image's ENTRYPOINT is `pilot`).
All of pilot's command line is here, so a renamed flag is changed in one place.
*/}}
{{- define "pilot.args" -}}
- --log-level
- {{ .Values.logLevel | quote }}
- serve
- --grpc-addr
- "0.0.0.0:15010"
- --monitoring-addr
- "0.0.0.0:15014"
- --domain-suffix
- {{ .Values.domainSuffix | quote }}
{{- if include "pilot.configDirEnabled" . }}
- --config-dir
- {{ include "pilot.configDir" . }}
{{- end }}
{{- if .Values.kubernetes.enabled }}
{{- if .Values.kubernetes.kubeconfigSecret }}
- --kubeconfig
- {{ include "pilot.kubeconfigDir" . }}/config
{{- else if include "pilot.configDirEnabled" . }}
{{- /* pilot serve uses the service account (in-cluster) only when given neither --config-dir nor --kubeconfig. */}}
{{- fail "config / existingConfigMap (a config directory) beside in-cluster Kubernetes is not supported by pilot serve yet (it uses the service account only without --config-dir): set kubernetes.enabled=false to serve the files alone, or kubernetes.kubeconfigSecret" }}
{{- end }}
{{- if .Values.meshConfig.discoverySelectors }}
- --discovery-selectors
- {{ include "pilot.meshConfigDir" . }}/{{ include "pilot.meshConfigFile" . }}
{{- end }}
{{- end }}
{{- if .Values.webhook.enabled }}
- --webhook-addr
- "0.0.0.0:15017"
- --webhook-cert
- {{ include "pilot.webhookCertDir" . }}/tls.crt
- --webhook-key
- {{ include "pilot.webhookCertDir" . }}/tls.key
{{- end }}
{{- if .Values.secureXds.enabled }}
- --secure-grpc-addr
- "0.0.0.0:15012"
- --tls-cert
- {{ include "pilot.xdsCertDir" . }}/tls.crt
- --tls-key
- {{ include "pilot.xdsCertDir" . }}/tls.key
{{- if .Values.secureXds.clientCertificates }}
- --ca-cert
- {{ include "pilot.xdsCertDir" . }}/ca.crt
{{- end }}
{{- end }}
{{- range .Values.extraContainerArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Label matchers for this release's series in the PrometheusRule.
*/}}
{{- define "pilot.metricSelector" -}}
{{- default (printf "namespace=%q,job=%q" .Release.Namespace (include "pilot.fullname" .)) .Values.prometheusRule.metricSelector }}
{{- end }}
