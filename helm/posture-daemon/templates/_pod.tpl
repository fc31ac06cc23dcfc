{{/* The pod template shared by the Deployment and the StatefulSet. */}}
{{- define "posture-daemon.podTemplate" -}}
metadata:
  labels:
    {{- include "posture-daemon.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "posture-daemon.serviceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: posture-daemon
      image: {{ include "posture-daemon.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      ports:
        - name: http
          containerPort: {{ .Values.service.port }}
          protocol: TCP
      env:
        - name: POSTURE_POLICY_FILE
          value: /etc/posture-daemon/policy/policy.yaml
        - name: POSTURE_HTTP__PORT
          value: {{ .Values.service.port | quote }}
        {{- if eq .Values.mode "statefulset" }}
        # The shard index is the pod's ordinal (name suffix -N); the count is the replicas.
        - name: POSTURE_SHARD__POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POSTURE_SHARD__COUNT
          value: {{ .Values.replicas | quote }}
        {{- end }}
        {{- with .Values.aws.region }}
        - name: AWS_REGION
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.aws.stsRegionalEndpoints }}
        - name: AWS_STS_REGIONAL_ENDPOINTS
          value: {{ . | quote }}
        {{- end }}
        {{- if .Values.aws.externalIdSecret.name }}
        - name: POSTURE_AWS__EXTERNAL_ID
          valueFrom:
            secretKeyRef:
              name: {{ .Values.aws.externalIdSecret.name }}
              key: {{ .Values.aws.externalIdSecret.key }}
        {{- end }}
        {{- range $section, $value := .Values.settings }}
        {{- if kindIs "map" $value }}
        {{- range $key, $inner := $value }}
        - name: {{ printf "POSTURE_%s__%s" $section $key | upper }}
          value: {{ include "posture-daemon.envValue" $inner }}
        {{- end }}
        {{- else }}
        - name: {{ printf "POSTURE_%s" $section | upper }}
          value: {{ include "posture-daemon.envValue" $value }}
        {{- end }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      volumeMounts:
        - name: policy
          mountPath: /etc/posture-daemon/policy
          readOnly: true
        - name: tmp
          mountPath: /tmp
      livenessProbe:
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
  volumes:
    - name: policy
      configMap:
        name: {{ include "posture-daemon.policyConfigMap" . }}
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: 64Mi
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* A setting's value as an environment variable: numbers without float noise, quoted. */}}
{{- define "posture-daemon.envValue" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- if eq (float64 .) (floor .) }}{{ int64 . | toString | quote }}{{ else }}{{ toString . | quote }}{{ end }}
{{- else }}
{{- toString . | quote }}
{{- end }}
{{- end }}
