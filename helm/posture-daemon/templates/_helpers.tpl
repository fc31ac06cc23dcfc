{{/* Names and labels, as in the prometheus-community charts. */}}

{{- define "posture-daemon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "posture-daemon.fullname" -}}
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

{{- define "posture-daemon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "posture-daemon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "posture-daemon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "posture-daemon.labels" -}}
helm.sh/chart: {{ include "posture-daemon.chart" . }}
{{ include "posture-daemon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: posture-daemon
{{- end }}

{{- define "posture-daemon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "posture-daemon.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "posture-daemon.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "posture-daemon.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "posture-daemon.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{/* A Kubernetes object name from a file name: lower case, [a-z0-9-] only. */}}
{{- define "posture-daemon.fileSlug" -}}
{{- $stem := regexReplaceAll "\\.(ya?ml|json)$" (lower .) "" }}
{{- regexReplaceAll "[^a-z0-9]+" $stem "-" | trimAll "-" }}
{{- end }}

{{/* The policy when none is given: every ACTIVE account of the organization, every enabled region. */}}
{{- define "posture-daemon.defaultPolicy" -}}
version: 1
scope:
  accounts:
    organizations:
      enabled: true
  regions: all
{{- end }}

{{/* The docs URL the shipped rules and dashboards link to (daemon.DOCS_URL), and its replacement. */}}
{{- define "posture-daemon.projectDocsUrl" -}}
https://github.com/posture-daemon/posture-daemon/blob/main/docs
{{- end }}

{{- define "posture-daemon.withDocsUrl" -}}
{{- $text := .text }}
{{- with .root.Values.docsUrl }}
{{- $text = replace (include "posture-daemon.projectDocsUrl" $.root) . $text }}
{{- end }}
{{- $text }}
{{- end }}
