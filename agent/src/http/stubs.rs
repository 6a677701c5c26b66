//! Builds the list shapes of the API (Nomad's `*ListStub`s, in
//! [`crate::wire::stubs`]).

use crate::server::state::Tables;
use crate::server::summary::job_summary;
use crate::structs::{Allocation, Job, Node};
use crate::wire::stubs::{AllocListStub, JobListStub, NodeListStub};

/// A job's list entry.
pub fn job_stub(snap: &Tables, job: &Job) -> JobListStub {
    JobListStub {
        id: job.id.clone(),
        parent_id: job.parent_id.clone(),
        name: job.name.clone(),
        namespace: job.namespace.clone(),
        datacenters: job.datacenters.clone(),
        job_type: job.job_type.clone(),
        priority: job.priority,
        periodic: job.is_periodic(),
        parameterized_job: job.is_parameterized(),
        stop: job.stop,
        status: job.status.clone(),
        status_description: job.status_description.clone(),
        job_summary: job_summary(snap, job),
        create_index: job.create_index,
        modify_index: job.modify_index,
        job_modify_index: job.job_modify_index,
        submit_time: job.submit_time,
    }
}

/// An allocation's list entry.
pub fn alloc_stub(a: &Allocation, with_resources: bool) -> AllocListStub {
    AllocListStub {
        id: a.id.clone(),
        eval_id: a.eval_id.clone(),
        name: a.name.clone(),
        namespace: a.namespace.clone(),
        node_id: a.node_id.clone(),
        node_name: a.node_name.clone(),
        job_id: a.job_id.clone(),
        job_type: a.job.as_ref().map(|j| j.job_type.clone()).unwrap_or_default(),
        job_version: a.job_version(),
        task_group: a.task_group.clone(),
        allocated_resources: with_resources.then(|| a.allocated_resources.clone()),
        desired_status: a.desired_status.clone(),
        desired_description: a.desired_description.clone(),
        desired_transition: a.desired_transition.clone(),
        client_status: a.client_status.clone(),
        client_description: a.client_description.clone(),
        task_states: a.task_states.clone(),
        followup_eval_id: a.followup_eval_id.clone(),
        reschedule_tracker: a.reschedule_tracker.clone(),
        previous_allocation: a.previous_allocation.clone(),
        next_allocation: a.next_allocation.clone(),
        deployment_status: a.deployment_status.clone(),
        create_index: a.create_index,
        modify_index: a.modify_index,
        create_time: a.create_time,
        modify_time: a.modify_time,
    }
}

/// A node's list entry.
pub fn node_stub(n: &Node, with_attributes: bool) -> NodeListStub {
    NodeListStub {
        address: n.attributes.get("unique.network.ip-address").cloned().unwrap_or_default(),
        id: n.id.clone(),
        datacenter: n.datacenter.clone(),
        name: n.name.clone(),
        node_class: n.node_class.clone(),
        node_pool: n.node_pool.clone(),
        version: n.attributes.get("berth.version").cloned().unwrap_or_default(),
        drain: n.drain,
        scheduling_eligibility: n.scheduling_eligibility.clone(),
        status: n.status.clone(),
        status_description: n.status_description.clone(),
        drivers: n.drivers.clone(),
        attributes: with_attributes.then(|| n.attributes.clone()),
        create_index: n.create_index,
        modify_index: n.modify_index,
    }
}
