// How NACK turns a Stream or Consumer resource into the JetStream configuration it creates:
// copied from NACK v0.22.4 (https://github.com/nats-io/nack/blob/v0.22.4/controllers/jetstream/,
// stream.go createStream and its helpers, consumer.go consumerSpecToOpts), the controller's
// default ("legacy") mode, changed only to return the options instead of creating the stream.
// The tests create them with jsm.go's Manager, as NACK does. NACK's controller is a program, not
// a library (its mapping is unexported), hence the copy; keep it at the NACK version the
// cluster runs.
//
// Copyright 2020 The NATS Authors. Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License. You may obtain a copy of the
// License at http://www.apache.org/licenses/LICENSE-2.0. Unless required by applicable law or
// agreed to in writing, software distributed under the License is distributed on an "AS IS"
// BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
// License for the specific language governing permissions and limitations under the License.

package deploy

import (
	"fmt"
	"strconv"
	"time"

	jsm "github.com/nats-io/jsm.go"
	jsmapi "github.com/nats-io/jsm.go/api"
	apis "github.com/nats-io/nack/pkg/jetstream/apis/jetstream/v1beta2"
)

// nackStreamOptions is the body of NACK's createStream, up to its c.NewStream(ctx, spec.Name,
// opts) (jsm.Manager.NewStream: jsm.DefaultStream with these options).
func nackStreamOptions(spec apis.StreamSpec) (opts []jsm.StreamOption, err error) {
	maxAge, err := getDurationFromString(spec.MaxAge)
	if err != nil {
		return nil, err
	}

	duplicates, err := getDuplicates(spec.DuplicateWindow)
	if err != nil {
		return nil, err
	}

	opts = []jsm.StreamOption{
		jsm.Subjects(spec.Subjects...),
		jsm.MaxConsumers(spec.MaxConsumers),
		jsm.MaxMessageSize(int32(spec.MaxMsgSize)),
		jsm.MaxMessages(int64(spec.MaxMsgs)),
		jsm.Replicas(spec.Replicas),
		jsm.DuplicateWindow(duplicates),
		jsm.MaxAge(maxAge),
		jsm.MaxBytes(int64(spec.MaxBytes)),
	}

	switch spec.Retention {
	case "limits":
		opts = append(opts, jsm.LimitsRetention())
	case "interest":
		opts = append(opts, jsm.InterestRetention())
	case "workqueue":
		opts = append(opts, jsm.WorkQueueRetention())
	}

	switch spec.Storage {
	case "file":
		opts = append(opts, jsm.FileStorage())
	case "memory":
		opts = append(opts, jsm.MemoryStorage())
	}

	switch spec.Discard {
	case "old":
		opts = append(opts, jsm.DiscardOld())
	case "new":
		opts = append(opts, jsm.DiscardNew())
	}

	switch spec.Compression {
	case "s2":
		opts = append(opts, jsm.Compression(jsmapi.S2Compression))
	case "none":
		opts = append(opts, jsm.Compression(jsmapi.NoCompression))
	}

	if spec.NoAck {
		opts = append(opts, jsm.NoAck())
	}

	if spec.Description != "" {
		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.Description = spec.Description
			return nil
		})
	}

	if spec.MaxMsgsPerSubject > 0 {
		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.MaxMsgsPer = int64(spec.MaxMsgsPerSubject)
			return nil
		})
	}

	if spec.Mirror != nil {
		ss, err := getStreamSource(spec.Mirror)
		if err != nil {
			return nil, err
		}

		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.Mirror = ss
			return nil
		})
	}

	if spec.Placement != nil {
		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.Placement = &jsmapi.Placement{
				Cluster: spec.Placement.Cluster,
				Tags:    spec.Placement.Tags,
			}
			return nil
		})
	}

	var srcs []*jsmapi.StreamSource
	for _, ss := range spec.Sources {
		jss, err := getStreamSource(ss)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, jss)
	}
	opts = append(opts, func(o *jsmapi.StreamConfig) error {
		o.Sources = srcs
		return nil
	})

	if spec.RePublish != nil {
		opts = append(opts, jsm.Republish(&jsmapi.RePublish{
			Source:      spec.RePublish.Source,
			Destination: spec.RePublish.Destination,
		}))
	}

	if spec.SubjectTransform != nil {
		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.SubjectTransform = &jsmapi.SubjectTransformConfig{
				Source:      spec.SubjectTransform.Source,
				Destination: spec.SubjectTransform.Dest,
			}
			return nil
		})
	}

	if spec.AllowDirect {
		opts = append(opts, jsm.AllowDirect())
	}

	if spec.AllowRollup {
		opts = append(opts, jsm.AllowRollup())
	}

	if spec.DenyDelete {
		opts = append(opts, jsm.DenyDelete())
	}

	if spec.DenyPurge {
		opts = append(opts, jsm.DenyPurge())
	}

	if spec.DiscardPerSubject {
		opts = append(opts, jsm.DiscardNewPerSubject())
	}

	if spec.FirstSequence != 0 {
		opts = append(opts, jsm.FirstSequence(spec.FirstSequence))
	}

	if spec.Metadata != nil {
		opts = append(opts, jsm.StreamMetadata(spec.Metadata))
	}

	if spec.AllowMsgTTL {
		opts = append(opts, jsm.AllowMsgTTL())
	}

	if spec.SubjectDeleteMarkerTTL != "" {
		d, err := time.ParseDuration(spec.SubjectDeleteMarkerTTL)
		if err != nil {
			return nil, fmt.Errorf("parse subject delete marker TTL: %w", err)
		}
		opts = append(opts, jsm.SubjectDeleteMarkerTTL(d))
	}

	if spec.AllowMsgCounter {
		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.AllowMsgCounter = true
			return nil
		})
	}

	if spec.AllowAtomicPublish {
		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.AllowAtomicPublish = true
			return nil
		})
	}

	if spec.AllowMsgSchedules {
		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.AllowMsgSchedules = true
			return nil
		})
	}

	if spec.PersistMode == "async" {
		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.PersistMode = jsmapi.AsyncPersistMode
			return nil
		})
	} else if spec.PersistMode == "default" {
		opts = append(opts, func(o *jsmapi.StreamConfig) error {
			o.PersistMode = jsmapi.DefaultPersistMode
			return nil
		})
	}

	return opts, nil
}

func getDurationFromString(v string) (time.Duration, error) {
	if v == "" {
		return time.Duration(0), nil
	}

	return time.ParseDuration(v)
}

func getDuplicates(v string) (time.Duration, error) {
	if v == "" {
		return time.Duration(0), nil
	}

	return time.ParseDuration(v)
}

func getStreamSource(ss *apis.StreamSource) (*jsmapi.StreamSource, error) {
	jss := &jsmapi.StreamSource{
		Name:          ss.Name,
		FilterSubject: ss.FilterSubject,
	}

	if ss.OptStartSeq > 0 {
		jss.OptStartSeq = uint64(ss.OptStartSeq)
	} else if ss.OptStartTime != "" {
		t, err := time.Parse(time.RFC3339, ss.OptStartTime)
		if err != nil {
			return nil, err
		}
		jss.OptStartTime = &t
	}

	if ss.ExternalAPIPrefix != "" || ss.ExternalDeliverPrefix != "" {
		jss.External = &jsmapi.ExternalStream{
			ApiPrefix:     ss.ExternalAPIPrefix,
			DeliverPrefix: ss.ExternalDeliverPrefix,
		}
	}

	for _, transform := range ss.SubjectTransforms {
		jss.SubjectTransforms = append(jss.SubjectTransforms, jsmapi.SubjectTransformConfig{
			Source:      transform.Source,
			Destination: transform.Dest,
		})
	}

	return jss, nil
}

// consumerSpecToOpts is NACK's, unchanged; createConsumer passes its options to
// jsm.Manager.NewConsumer (jsm.DefaultConsumer with these options).
func consumerSpecToOpts(spec apis.ConsumerSpec) ([]jsm.ConsumerOption, error) {
	opts := []jsm.ConsumerOption{
		jsm.DurableName(spec.DurableName),
		jsm.DeliverySubject(spec.DeliverSubject),
		jsm.RateLimitBitsPerSecond(uint64(spec.RateLimitBps)),
		jsm.MaxAckPending(uint(spec.MaxAckPending)),
		jsm.ConsumerDescription(spec.Description),
		jsm.DeliverGroup(spec.DeliverGroup),
		jsm.MaxWaiting(uint(spec.MaxWaiting)),
		jsm.MaxRequestBatch(uint(spec.MaxRequestBatch)),
		jsm.MaxRequestMaxBytes(spec.MaxRequestMaxBytes),
		jsm.ConsumerOverrideReplicas(spec.Replicas),
	}

	if spec.FilterSubject != "" && len(spec.FilterSubjects) > 0 {
		return nil, fmt.Errorf("cannot specify both FilterSubject and FilterSubjects")
	}

	if spec.FilterSubject != "" {
		opts = append(opts, jsm.FilterStreamBySubject(spec.FilterSubject))
	} else if len(spec.FilterSubjects) > 0 {
		opts = append(opts, jsm.FilterStreamBySubject(spec.FilterSubjects...))
	}

	switch spec.DeliverPolicy {
	case "all":
		opts = append(opts, jsm.DeliverAllAvailable())
	case "last":
		opts = append(opts, jsm.StartWithLastReceived())
	case "new":
		opts = append(opts, jsm.StartWithNextReceived())
	case "byStartSequence":
		opts = append(opts, jsm.StartAtSequence(uint64(spec.OptStartSeq)))
	case "byStartTime":
		if spec.OptStartTime == "" {
			return nil, fmt.Errorf("'optStartTime' is required for deliver policy 'byStartTime'")
		}
		t, err := time.Parse(time.RFC3339, spec.OptStartTime)
		if err != nil {
			return nil, err
		}
		opts = append(opts, jsm.StartAtTime(t))
	case "lastPerSubject":
		opts = append(opts, jsm.DeliverLastPerSubject())
	case "":
	default:
		return nil, fmt.Errorf("invalid value for 'deliverPolicy': '%s'. Must be one of 'all', 'last', 'new', 'lastPerSubject', 'byStartSequence', 'byStartTime'", spec.DeliverPolicy)
	}

	switch spec.AckPolicy {
	case "none":
		opts = append(opts, jsm.AcknowledgeNone())
	case "all":
		opts = append(opts, jsm.AcknowledgeAll())
	case "explicit":
		opts = append(opts, jsm.AcknowledgeExplicit())
	case "":
	default:
		return nil, fmt.Errorf("invalid value for 'ackPolicy': '%s'. Must be one of 'none', 'all', 'explicit'", spec.AckPolicy)
	}

	if spec.AckWait != "" {
		d, err := time.ParseDuration(spec.AckWait)
		if err != nil {
			return nil, err
		}
		opts = append(opts, jsm.AckWait(d))
	}

	switch spec.ReplayPolicy {
	case "instant":
		opts = append(opts, jsm.ReplayInstantly())
	case "original":
		opts = append(opts, jsm.ReplayAsReceived())
	case "":
	default:
		return nil, fmt.Errorf("invalid value for 'replayPolicy': '%s'. Must be one of 'instant', 'original'", spec.ReplayPolicy)
	}

	if spec.SampleFreq != "" {
		n, err := strconv.Atoi(spec.SampleFreq)
		if err != nil {
			return nil, err
		}
		opts = append(opts, jsm.SamplePercent(n))
	}

	if spec.FlowControl {
		opts = append(opts, jsm.PushFlowControl())
	}

	if spec.HeartbeatInterval != "" {
		d, err := time.ParseDuration(spec.HeartbeatInterval)
		if err != nil {
			return nil, err
		}
		opts = append(opts, jsm.IdleHeartbeat(d))
	}

	if len(spec.BackOff) > 0 {
		backoffs := make([]time.Duration, 0)
		for _, backoff := range spec.BackOff {
			dur, err := time.ParseDuration(backoff)
			if err != nil {
				return nil, err
			}
			backoffs = append(backoffs, dur)
		}
		opts = append(opts, jsm.BackoffIntervals(backoffs...))
	}

	if spec.HeadersOnly {
		opts = append(opts, jsm.DeliverHeadersOnly())
	} else {
		opts = append(opts, jsm.DeliverBodies())
	}

	if spec.MaxRequestExpires != "" {
		dur, err := time.ParseDuration(spec.MaxRequestExpires)
		if err != nil {
			return nil, err
		}
		opts = append(opts, jsm.MaxRequestExpires(dur))
	}

	if spec.MemStorage {
		opts = append(opts, jsm.ConsumerOverrideMemoryStorage())
	}

	if spec.MaxDeliver != 0 {
		opts = append(opts, jsm.MaxDeliveryAttempts(spec.MaxDeliver))
	}

	if spec.Metadata != nil {
		opts = append(opts, jsm.ConsumerMetadata(spec.Metadata))
	}

	if spec.InactiveThreshold != "" {
		dur, err := time.ParseDuration(spec.InactiveThreshold)
		if err != nil {
			return nil, err
		}
		opts = append(opts, jsm.InactiveThreshold(dur))
	}

	// Handle PauseUntil for pausing consumer
	if spec.PauseUntil != "" {
		t, err := time.Parse(time.RFC3339, spec.PauseUntil)
		if err != nil {
			return nil, fmt.Errorf("invalid pauseUntil time: %w", err)
		}
		opts = append(opts, jsm.PauseUntil(t))
	}

	// Handle PriorityPolicy with PriorityGroups and PinnedTTL
	switch spec.PriorityPolicy {
	case "", "none":
		// Default is none, no need to set
	case "pinned_client":
		if spec.PinnedTTL != "" {
			dur, err := time.ParseDuration(spec.PinnedTTL)
			if err != nil {
				return nil, fmt.Errorf("invalid pinnedTTL duration: %w", err)
			}
			opts = append(opts, jsm.PinnedClientPriorityGroups(dur, spec.PriorityGroups...))
		}
	case "overflow":
		opts = append(opts, jsm.OverflowPriorityGroups(spec.PriorityGroups...))
	case "prioritized":
		opts = append(opts, jsm.PrioritizedPriorityGroups(spec.PriorityGroups...))
	default:
		return nil, fmt.Errorf("invalid priority policy: %s", spec.PriorityPolicy)
	}

	return opts, nil
}
