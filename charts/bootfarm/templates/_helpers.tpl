{{/* Names. */}}
{{- define "bootfarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bootfarm.fullname" -}}
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

{{- define "bootfarm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: selectorLabels never change across upgrades. */}}
{{- define "bootfarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bootfarm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bootfarm.labels" -}}
helm.sh/chart: {{ include "bootfarm.chart" . }}
{{ include "bootfarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bootfarm
{{- end }}

{{- define "bootfarm.operatorSelectorLabels" -}}
{{ include "bootfarm.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Runner pods are created by the operator with these labels (see reference/runner-pod.yaml). */}}
{{- define "bootfarm.runnerSelectorLabels" -}}
{{ include "bootfarm.selectorLabels" . }}
app.kubernetes.io/component: runner
{{- end }}

{{- define "bootfarm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bootfarm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bootfarm.runnerServiceAccountName" -}}
{{- if .Values.runner.serviceAccount.create }}
{{- default (printf "%s-runner" (include "bootfarm.fullname" .)) .Values.runner.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.runner.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bootfarm.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (toString (default .Chart.AppVersion .Values.operator.image.tag)) }}
{{- end }}

{{- define "bootfarm.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (toString (default .Chart.AppVersion .Values.runner.image.tag)) }}
{{- end }}

{{- define "bootfarm.apiTokensSecret" -}}
{{- printf "%s-api-tokens" (include "bootfarm.fullname" .) }}
{{- end }}

{{- define "bootfarm.runnerTokenSecret" -}}
{{- printf "%s-runner-token" (include "bootfarm.fullname" .) }}
{{- end }}

{{/* The URL runner pods use to reach the operator: runner.serverURL, else the Service in the release namespace. */}}
{{- define "bootfarm.serverURL" -}}
{{- if .Values.runner.serverURL }}
{{- .Values.runner.serverURL }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "bootfarm.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
{{- end }}

{{/* Pool names are DNS-1123 labels: x86_64 -> x86-64. */}}
{{- define "bootfarm.archSlug" -}}
{{- . | replace "_" "-" | lower }}
{{- end }}

{{/*
The operator's permissions, shared by the Role and the ClusterRole. Least privilege for what
it does: reconcile BootJobs and RunnerPools (status by server-side apply), create and delete
runner pods, record Events.
*/}}
{{- define "bootfarm.operatorRules" -}}
# create: HTTP API submissions are stored as BootJobs; delete: cancel over HTTP and TTL expiry.
- apiGroups: [bootfarm.dev]
  resources: [bootjobs]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [bootfarm.dev]
  resources: [runnerpools]
  verbs: [get, list, watch, patch, update]
# BootPlans applied with kubectl are expanded into BootJobs; their status is the plan's summary.
- apiGroups: [bootfarm.dev]
  resources: [bootplans]
  verbs: [get, list, watch]
- apiGroups: [bootfarm.dev]
  resources: [bootjobs/status, runnerpools/status, bootplans/status]
  verbs: [get, patch, update]
# Runner pods carry blockOwnerDeletion owner references to their RunnerPool (and leases to their
# BootJob); clusters with OwnerReferencesPermissionEnforcement require update on */finalizers for that.
- apiGroups: [bootfarm.dev]
  resources: [bootjobs/finalizers, runnerpools/finalizers, bootplans/finalizers]
  verbs: [update]
# patch: busy runners get the autoscalers' do-not-evict annotations, idle ones lose them.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/*
The node directories allowed as local artifacts (artifacts.allowLocal): read-only hostPath volumes
and their mounts at the same path, for the operator and the runner pods alike.
*/}}
{{- define "bootfarm.artifactVolumes" -}}
{{- range $i, $dir := .Values.artifacts.allowLocal }}
- name: local-artifacts-{{ $i }}
  hostPath:
    path: {{ $dir | quote }}
    type: Directory
{{- end }}
{{- end }}

{{- define "bootfarm.artifactVolumeMounts" -}}
{{- range $i, $dir := .Values.artifacts.allowLocal }}
- name: local-artifacts-{{ $i }}
  mountPath: {{ $dir | quote }}
  readOnly: true
{{- end }}
{{- end }}
