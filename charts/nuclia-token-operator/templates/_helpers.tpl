{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "nuclia-token-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "nuclia-token-operator.fullname" -}}
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

{{- define "nuclia-token-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels selecting the operator's pods. */}}
{{- define "nuclia-token-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nuclia-token-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "nuclia-token-operator.labels" -}}
helm.sh/chart: {{ include "nuclia-token-operator.chart" . }}
{{ include "nuclia-token-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "nuclia-token-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nuclia-token-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nuclia-token-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "nuclia-token-operator.leaseName" -}}
{{- default (include "nuclia-token-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The rules the controllers need in each namespace they watch (a ClusterRole, or one Role per
watched namespace). See the README's RBAC section for why each is needed.
*/}}
{{- define "nuclia-token-operator.controllerRules" -}}
- apiGroups: ["nuclia.dev"]
  resources: ["nucliapersonaltokens", "nucliakbapikeys"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["nuclia.dev"]
  resources: ["nucliapersonaltokens/status", "nucliakbapikeys/status"]
  verbs: ["patch"]
- apiGroups: ["nuclia.dev"]
  resources: ["nucliapersonaltokens/finalizers", "nucliakbapikeys/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.restartWorkloads }}
# spec.rolloutRestartTargets: a pod-template annotation, as `kubectl rollout restart` sets it.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["patch"]
{{- end }}
{{- end }}
