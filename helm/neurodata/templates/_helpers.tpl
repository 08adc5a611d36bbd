{{/* Names, labels, images and the security settings every pod and container shares. */}}

{{- define "neurodata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Short enough that "<fullname>-validator-<n>-p2p" stays a valid Service name (63). */}}
{{- define "neurodata.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "neurodata.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway"). */}}
{{- define "neurodata.selectorLabels" -}}
app.kubernetes.io/name: {{ include "neurodata.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "neurodata.labels" -}}
{{ include "neurodata.selectorLabels" . }}
app.kubernetes.io/part-of: neurodata
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ include "neurodata.chart" .root }}
{{- end -}}

{{/* An image reference: (dict "root" $ "image" .Values.gateway.image). */}}
{{- define "neurodata.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Every pod: non-root uid/gid 10001 (the images' user), volumes group-owned by it. */}}
{{- define "neurodata.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Every container: nothing to escalate to, nothing writable but its volumes. */}}
{{- define "neurodata.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "neurodata.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "neurodata.podSecurityContext" . | nindent 2 }}
{{- end -}}

{{/* The gateway's in-cluster URL (its server certificate must name this host). */}}
{{- define "neurodata.gatewayUrl" -}}
{{- printf "https://%s-gateway.%s.svc:%d" (include "neurodata.fullname" .) .Release.Namespace (int .Values.gateway.port) -}}
{{- end -}}

{{/* CometBFT RPC of this release's first validator. */}}
{{- define "neurodata.validatorRpc" -}}
{{- if .Values.validator.rpc.service.enabled -}}
{{- printf "http://%s-validator-rpc.%s.svc:%d" (include "neurodata.fullname" .) .Release.Namespace (int .Values.validator.rpc.port) -}}
{{- else -}}
{{- printf "http://%s-validator-0.%s-validator-headless.%s.svc:%d" (include "neurodata.fullname" .) (include "neurodata.fullname" .) .Release.Namespace (int .Values.validator.rpc.port) -}}
{{- end -}}
{{- end -}}

{{/* The Role of the worker's Kubernetes runner: exactly what worker/src/kube_runner.rs does. */}}
{{- define "neurodata.runnerRules" -}}
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- end -}}

{{/*
The flags of the worker's Kubernetes runner, shared by `train` and `verify`:
(dict "root" $ "k8s" .Values.worker.kubernetes "image" <image> "claim" <pvc> "selector" <map> "port" <n>).
*/}}
{{- define "neurodata.runnerArgs" -}}
- --runner
- kubernetes
{{- /* No --k8s-namespace: the runs go into the pod's own namespace, the only one where the
work claim (a PVC of this release) can be mounted. */}}
- --k8s-image
- {{ .image | quote }}
- --k8s-work-claim
- {{ .claim | quote }}
- --k8s-gateway-selector
- {{ include "neurodata.selectorString" .selector | quote }}
- --k8s-gateway-port
- {{ .port | quote }}
- --k8s-cpu
- {{ .k8s.cpu | quote }}
- --k8s-ttl-seconds
- {{ .k8s.ttlSeconds | quote }}
{{- range $k, $v := .k8s.podAnnotations }}
- --k8s-pod-annotation
- {{ printf "%s=%s" $k $v | quote }}
{{- end }}
{{- range .root.Values.imagePullSecrets }}
- --k8s-image-pull-secret
- {{ .name | quote }}
{{- end }}
{{- end -}}

{{/* A label map as k=v,k=v (sorted: Go templates range over maps in key order). */}}
{{- define "neurodata.selectorString" -}}
{{- $pairs := list -}}
{{- range $k, $v := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* Labels of this release's gateway pods (the run pods' only egress). */}}
{{- define "neurodata.gatewaySelector" -}}
{{- $labels := dict "app.kubernetes.io/name" (include "neurodata.name" .) "app.kubernetes.io/instance" .Release.Name "app.kubernetes.io/component" "gateway" -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* Checks across sections that the schema cannot express. */}}
{{- define "neurodata.validate" -}}
{{- $any := or .Values.validator.enabled .Values.gateway.enabled .Values.worker.enabled -}}
{{- if and $any (not .Values.org) -}}
{{- fail "org is required: the org's id on chain (e.g. --set org=medlab)" -}}
{{- end -}}
{{- $v := .Values -}}
{{- if and $v.verifier.enabled (not $v.validator.enabled) -}}
{{- fail "verifier.enabled needs validator.enabled: the verifier runs in the validator's pod to share its verdict inbox" -}}
{{- end -}}
{{- if and $v.gateway.enabled (not $v.validator.enabled) (not $v.gateway.nodeRpc) -}}
{{- fail "gateway.nodeRpc is required when this release runs no validator (the CometBFT RPC the gateway relays to)" -}}
{{- end -}}
{{- if and $v.worker.enabled (not $v.gateway.enabled) (not $v.worker.gateway) -}}
{{- fail "worker.gateway is required when this release runs no gateway" -}}
{{- end -}}
{{- if and $v.verifier.enabled (not $v.gateway.enabled) (not $v.verifier.gateway) -}}
{{- fail "verifier.gateway is required when this release runs no gateway" -}}
{{- end -}}
{{- if and $v.worker.enabled (eq $v.worker.runner "kubernetes") (not $v.gateway.enabled) (not $v.worker.kubernetes.gatewaySelector) -}}
{{- fail "worker.kubernetes.gatewaySelector is required when this release runs no gateway (the labels of the org gateway's pods, the run pods' only egress)" -}}
{{- end -}}
{{- if and $v.validator.enabled (not $v.validator.genesis.configMap) (not $v.validator.genesis.json) -}}
{{- fail "validator.genesis.configMap or validator.genesis.json is required" -}}
{{- end -}}
{{- if and $v.gateway.enabled (eq $v.gateway.blobStore.type "s3") (not $v.gateway.blobStore.s3.bucket) -}}
{{- fail "gateway.blobStore.s3.bucket is required with blobStore.type s3" -}}
{{- end -}}
{{- if and $v.gateway.enabled (eq $v.gateway.blobStore.type "ipfs") (not $v.gateway.blobStore.ipfs.api) -}}
{{- fail "gateway.blobStore.ipfs.api is required with blobStore.type ipfs" -}}
{{- end -}}
{{- if and $v.worker.enabled (eq $v.worker.runner "kubernetes") (not (has "ReadWriteMany" $v.worker.persistence.accessModes)) -}}
{{- fail "worker.persistence.accessModes must include ReadWriteMany with worker.runner kubernetes: every run pod mounts the worker's work volume" -}}
{{- end -}}
{{- if and $v.verifier.enabled (eq $v.verifier.runner "kubernetes") (not (has "ReadWriteMany" $v.verifier.kubernetes.workClaim.accessModes)) -}}
{{- fail "verifier.kubernetes.workClaim.accessModes must include ReadWriteMany with verifier.runner kubernetes: every re-execution pod mounts the verifier's work volume" -}}
{{- end -}}
{{- if and $v.gateway.enabled $v.gateway.keyDelivery.enabled (not $v.gateway.keyDelivery.memberSecret) -}}
{{- fail "gateway.keyDelivery.memberSecret is required with keyDelivery.enabled" -}}
{{- end -}}
{{- end -}}
