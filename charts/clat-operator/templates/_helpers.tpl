{{/* Names, labels and image references shared by the templates. */}}

{{/* The chart name, or nameOverride. */}}
{{- define "clat-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name prefix of every object: fullnameOverride, or release name (+ chart name). */}}
{{- define "clat-operator.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "clat-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pods (never change them: Deployment selectors are immutable). */}}
{{- define "clat-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clat-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every object. */}}
{{- define "clat-operator.labels" -}}
helm.sh/chart: {{ include "clat-operator.chart" . }}
{{ include "clat-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: clat-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "clat-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "clat-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook's Service, Secret and Certificate names. */}}
{{- define "clat-operator.webhookService" -}}
{{- printf "%s-webhook" (include "clat-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "clat-operator.tlsSecret" -}}
{{- printf "%s-webhook-tls" (include "clat-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* DNS names of the webhook Service, for the certificate (the API server uses <svc>.<ns>.svc). */}}
{{- define "clat-operator.webhookDNSNames" -}}
{{- $svc := include "clat-operator.webhookService" . }}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) | toJson }}
{{- end }}

{{/* "repository:tag" or "repository@digest". Call with (list repository tag digest context). */}}
{{- define "clat-operator.imageRef" -}}
{{- $repository := index . 0 }}
{{- $tag := index . 1 }}
{{- $digest := index . 2 }}
{{- $root := index . 3 }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository (default $root.Chart.AppVersion $tag) }}
{{- end }}
{{- end }}

{{/* The operator image. */}}
{{- define "clat-operator.image" -}}
{{- include "clat-operator.imageRef" (list .Values.image.repository .Values.image.tag .Values.image.digest .) }}
{{- end }}

{{/* The injected sidecar's image: its own if set, else the operator's (one image, both commands). */}}
{{- define "clat-operator.sidecarImage" -}}
{{- $sidecar := .Values.clat.sidecar.image }}
{{- if $sidecar.repository }}
{{- include "clat-operator.imageRef" (list $sidecar.repository $sidecar.tag $sidecar.digest .) }}
{{- else }}
{{- include "clat-operator.image" . }}
{{- end }}
{{- end }}

{{/* Namespaces the webhook never sees and the operator never injects. */}}
{{- define "clat-operator.excludedNamespaces" -}}
{{- concat (list "kube-system" .Release.Namespace) .Values.clat.excludeNamespaces | uniq | toJson }}
{{- end }}

{{/* ---- node mode: the clat-node agent's DaemonSet ---- */}}

{{/* Name of the agent's DaemonSet, ServiceAccount and ClusterRole. */}}
{{- define "clat-operator.nodeFullname" -}}
{{- printf "%s-node" (include "clat-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the agent pods (never change them: DaemonSet selectors are immutable). */}}
{{- define "clat-operator.nodeSelectorLabels" -}}
app.kubernetes.io/name: {{ include "clat-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end }}

{{/* Labels of the agent's objects. */}}
{{- define "clat-operator.nodeLabels" -}}
helm.sh/chart: {{ include "clat-operator.chart" . }}
{{ include "clat-operator.nodeSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: clat-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The agent's ServiceAccount. */}}
{{- define "clat-operator.nodeServiceAccountName" -}}
{{- if .Values.node.serviceAccount.create }}
{{- default (include "clat-operator.nodeFullname" .) .Values.node.serviceAccount.name }}
{{- else }}
{{- required "node.serviceAccount.name must name an existing ServiceAccount when node.serviceAccount.create is false" .Values.node.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Settings that only make sense together: checked once, by the Deployment's template. */}}
{{- define "clat-operator.validate" -}}
{{- if and (eq .Values.clat.mode "node") (not .Values.node.enabled) }}
{{- fail "clat.mode=node needs node.enabled=true: node-mode pods are served by the clat-node agent of their node, which the chart installs as a DaemonSet only with node.enabled (or keep clat.mode=sidecar)" }}
{{- end }}
{{- if and .Values.node.hostClat (not .Values.node.enabled) }}
{{- fail "node.hostClat=true needs node.enabled=true: the host CLAT runs in the clat-node DaemonSet" }}
{{- end }}
{{- end }}
